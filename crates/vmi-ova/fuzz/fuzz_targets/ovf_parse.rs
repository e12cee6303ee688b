//! Any bytes through the OVF parser and, when they parse, through `describe` for every
//! VirtualSystem and deployment configuration; the same bytes through the manifest parser.
//! Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vmi_ova::ovf::{self, Selection};

fuzz_target!(|data: &[u8]| {
    let _ = vmi_ova::manifest::parse(data);
    let Ok(env) = ovf::parse(data) else {
        return;
    };
    let _ = ovf::describe(&env, &Selection::default());
    for system in &env.systems {
        for id in [system.id.as_deref(), system.name.as_deref()] {
            let _ = ovf::describe(
                &env,
                &Selection {
                    system: id,
                    configuration: None,
                },
            );
        }
        for c in &env.configurations {
            let _ = ovf::describe(
                &env,
                &Selection {
                    system: system.id.as_deref(),
                    configuration: Some(&c.id),
                },
            );
        }
    }
});
