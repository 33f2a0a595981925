//! The benchmark script must not rot: `bench/bench.py --quick` (corral only,
//! tiny sizes, a few seconds, no PM2, no network) runs every workload
//! against the binary under test, exits 0 and prints its table.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::bin;

/// The longest the smoke run may take before the test fails.
const SMOKE_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn bench_quick_runs_every_workload_and_prints_its_table() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not found: skipping the benchmark smoke test");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/bench.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg("--quick")
        .arg("--corral")
        .arg(bin())
        .env_remove("CORRAL_HOME")
        .env_remove("PM2_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 bench/bench.py --quick");
    let deadline = Instant::now() + SMOKE_TIMEOUT;
    while child.try_wait().expect("wait for the bench").is_none() {
        if Instant::now() >= deadline {
            // SIGTERM: the script ends every process it started, then exits.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let out = child.wait_with_output().expect("collect the bench output");
            panic!(
                "bench.py --quick took more than {SMOKE_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("collect the bench output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench.py --quick failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(!stdout.contains("FAILED"), "a workload failed:\n{stdout}");
    for heading in [
        "1. daemon memory",
        "2. daemon CPU",
        "3. start, list, stop",
        "4. crash restart",
        "5. logs",
        "6. stop timeout",
        "7. cluster",
        "8. crash storm",
        "9. update in place",
    ] {
        assert!(
            stdout.contains(heading),
            "no `{heading}` in the table:\n{stdout}"
        );
    }
    for figure in [
        "daemon RSS, idle",
        "cold start (no daemon)",
        "SIGKILL → replacement exec'd",
        "log throughput",
        "log throughput with timestamps",
        "failed requests during a rolling reload",
        "ping p99 during the storm",
        "apps whose pid changed",
    ] {
        assert!(stdout.contains(figure), "no `{figure}` row:\n{stdout}");
    }
    assert!(
        !stdout.contains("installing pm2") && !stdout.contains("corral advantage"),
        "quick mode must not run PM2:\n{stdout}"
    );
}
