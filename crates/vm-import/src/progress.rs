//! Progress on stderr: bars per disk on a terminal, plain lines otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use vmi_core::phase::Phase;
use vmi_engine::ProgressSink;

/// Chooses bars when stderr is a terminal.
pub fn for_stderr() -> Box<dyn ProgressSink> {
    if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines::default())
    }
}

fn mib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let m = bytes as f64 / f64::from(1 << 20);
    format!("{m:.1} MiB")
}

struct Bars {
    multi: MultiProgress,
    bars: Mutex<BTreeMap<usize, ProgressBar>>,
}

impl Bars {
    fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(BTreeMap::new()),
        }
    }

    fn bar(&self, i: usize) -> ProgressBar {
        let mut bars = self
            .bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        bars.entry(i)
            .or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(0));
                let style = ProgressStyle::with_template(
                    "disk {prefix} {wide_msg} {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                b.set_style(style);
                b.set_prefix(i.to_string());
                b
            })
            .clone()
    }
}

impl ProgressSink for Bars {
    fn phase(&self, phase: Phase) {
        let _ = self.multi.println(format!("==> {phase}"));
    }
    fn disk_step(&self, index: usize, label: &str, step: &str) {
        let b = self.bar(index);
        b.set_message(if label.is_empty() {
            step.to_owned()
        } else {
            format!("{label}: {step}")
        });
        b.tick();
    }
    fn disk_bytes(&self, index: usize, done: u64, total: Option<u64>) {
        let b = self.bar(index);
        if let Some(t) = total {
            b.set_length(t);
        }
        b.set_position(done);
    }
    fn note(&self, text: &str) {
        let _ = self.multi.println(format!("    {text}"));
    }
}

/// Plain lines, each with the seconds since the start (for logs and CI output).
struct Lines {
    start: Instant,
    last: Mutex<BTreeMap<usize, (Instant, u64)>>,
}

impl Default for Lines {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Lines {
    fn at(&self) -> String {
        format!("[{:7.1}s]", self.start.elapsed().as_secs_f64())
    }
}

impl ProgressSink for Lines {
    fn phase(&self, phase: Phase) {
        eprintln!("{} ==> {phase}", self.at());
    }
    fn disk_step(&self, index: usize, label: &str, step: &str) {
        if label.is_empty() {
            eprintln!("{} disk {index}: {step}", self.at());
        } else {
            eprintln!("{} disk {index} ({label}): {step}", self.at());
        }
    }
    fn disk_bytes(&self, index: usize, done: u64, total: Option<u64>) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = last.entry(index).or_insert((Instant::now(), 0));
        let finished = total.is_some_and(|t| done >= t);
        if entry.0.elapsed() >= Duration::from_secs(5) || (finished && entry.1 != done) {
            *entry = (Instant::now(), done);
            match total {
                Some(t) if t > 0 => eprintln!(
                    "disk {index}: {} of {} ({}%)",
                    mib(done),
                    mib(t),
                    done * 100 / t
                ),
                _ => eprintln!("disk {index}: {}", mib(done)),
            }
        }
    }
    fn note(&self, text: &str) {
        eprintln!("{}     {text}", self.at());
    }
}
