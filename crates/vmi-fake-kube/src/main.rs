//! `fake-kube --kubeconfig OUT [--port N]`: serves a fake Kubernetes API on
//! 127.0.0.1, prints `ready <url>` once listening, and stops on SIGTERM/SIGINT.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use vmi_fake_kube::FakeKube;

const USAGE: &str = "usage: fake-kube --kubeconfig PATH [--port N] [--token T] [--require-token] \
[--bookmark-interval-ms MS] [--history-limit N] [--strict-namespaces] [--log-requests]";

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-kube: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run())
}

fn next_value(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, String> {
    args.next().ok_or_else(|| format!("{flag} needs a value"))
}

struct Args {
    builder: vmi_fake_kube::FakeKubeBuilder,
    kubeconfig: Option<String>,
    require_token: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args {
        builder: FakeKube::builder(),
        kubeconfig: None,
        require_token: false,
    };
    while let Some(a) = args.next() {
        let b = out.builder;
        out.builder = match a.as_str() {
            "--kubeconfig" => {
                out.kubeconfig = Some(next_value(&mut args, &a)?);
                b
            }
            "--port" => {
                let p = next_value(&mut args, &a)?;
                b.port(p.parse().map_err(|_| format!("bad port {p:?}"))?)
            }
            "--token" => b.token(next_value(&mut args, &a)?),
            "--require-token" => {
                out.require_token = true;
                b
            }
            "--bookmark-interval-ms" => {
                let v = next_value(&mut args, &a)?;
                let ms: u64 = v.parse().map_err(|_| format!("bad interval {v:?}"))?;
                b.bookmark_interval(Duration::from_millis(ms))
            }
            "--history-limit" => {
                let v = next_value(&mut args, &a)?;
                b.history_limit(v.parse().map_err(|_| format!("bad limit {v:?}"))?)
            }
            "--strict-namespaces" => b.strict_namespaces(true),
            "--log-requests" => b.log_requests(true),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        };
    }
    Ok(out)
}

async fn run() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("fake-kube: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(kubeconfig) = args.kubeconfig else {
        eprintln!("fake-kube: --kubeconfig is required\n{USAGE}");
        return ExitCode::from(2);
    };
    let builder = args.builder;
    let require_token = args.require_token;
    let builder = builder
        .require_token(require_token)
        .kubeconfig_path(kubeconfig);
    let fake = match builder.start().await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake-kube: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "ready {}", fake.url())
            .and_then(|()| out.flush())
            .is_err()
        {
            return ExitCode::FAILURE;
        }
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake-kube: cannot handle SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    fake.shutdown().await;
    ExitCode::SUCCESS
}
