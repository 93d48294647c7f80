//! Crashes: an immediate restart, backoff doubling, the failure budget, auto-restart off,
//! critical processes, and an operator's start clearing a failed service.

use super::*;

/// `crashy` backs off 200 ms, doubling to 400 ms, and fails at the third failure in a minute.
fn crashy() -> Arc<ManifestSet> {
    set(&[
        ("healthy", &svc("healthy", "")),
        (
            "crashy",
            &svc(
                "crashy",
                "[service.restart]\nbackoff-initial-ms = 200\nbackoff-max-ms = 400\nbudget = 4\nwindow-secs = 60",
            ),
        ),
    ])
}

#[test]
fn a_crash_restarts_at_once_then_backs_off_doubling_until_the_budget_is_spent() {
    check(
        crashy(),
        vec![
            Boot,
            Mark,
            Exit("crashy", 3),
            Show("crashy"),
            Exit("crashy", 3),
            Show("crashy"),
            Advance(199),
            Advance(1),
            Exit("crashy", 137),
            Show("crashy"),
            Advance(399),
            Advance(1),
            Exit("crashy", 3),
            Show("crashy"),
            // Failed stays failed: an hour passes and nothing starts.
            Advance(3_600_000),
            Show("crashy"),
            Show("healthy"),
        ],
        "
        start crashy #2
        crashy: running ready gen 2 restarts 1
        crashy: restarting gen 2 restarts 2 \"restarting after crash, attempt 2, next in 200ms (exited with code 3)\"
        start crashy #3
        crashy: restarting gen 3 restarts 3 \"restarting after crash, attempt 3, next in 400ms (killed by signal 9)\"
        start crashy #4
        crashy: failed gen 4 restarts 3 \"4 failures within 60s, last: exited with code 3\"
        crashy: failed gen 4 restarts 3 \"4 failures within 60s, last: exited with code 3\"
        healthy: running ready gen 1 restarts 0
        ",
    );
}

#[test]
fn the_budget_counts_failures_within_its_window_only() {
    check(
        crashy(),
        vec![
            Boot,
            Exit("crashy", 3),
            Exit("crashy", 3),
            Advance(200),
            Exit("crashy", 3),
            Advance(400),
            Mark,
            // A minute later the first three failures left the window: this is attempt 1.
            Advance(61_000),
            Exit("crashy", 3),
            Show("crashy"),
        ],
        "
        start crashy #5
        crashy: running ready gen 5 restarts 4
        ",
    );
}

#[test]
fn an_operators_start_of_a_failed_service_resets_its_budget() {
    check(
        crashy(),
        vec![
            Boot,
            Exit("crashy", 3),
            Exit("crashy", 3),
            Advance(200),
            Exit("crashy", 3),
            Advance(400),
            Exit("crashy", 3),
            Mark,
            start("crashy"),
            Show("crashy"),
            Exit("crashy", 3),
            Show("crashy"),
        ],
        "
        start crashy #5
        reply 1 ok crashy running ready
        crashy: running ready gen 5 restarts 3
        start crashy #6
        crashy: running ready gen 6 restarts 4
        ",
    );
}

#[test]
fn a_service_that_is_never_ready_is_restarted_after_its_readiness_timeout() {
    let mut world = World::new(crashy());
    world.step(Image("crashy:1", "sha256:slow", Behaviour::NeverReady));
    run(
        &mut world,
        vec![Boot, Mark, Show("crashy"), Advance(30_000), Show("crashy")],
        "
        crashy: running gen 1 restarts 0
        stop crashy cold
        start crashy #2
        crashy: running gen 2 restarts 1 \"restarting after crash, attempt 1 (not ready within 30s: probe did not pass)\"
        ",
    );
}

#[test]
fn a_critical_process_exit_restarts_the_container() {
    check(
        sonic(),
        vec![Boot, Ports(true), Mark, Critical("pmon", "xcvrd"), Show("pmon")],
        "
        stop pmon cold
        start pmon #2
        pmon: running ready gen 2 restarts 1
        ",
    );
}

#[test]
fn with_auto_restart_disabled_a_critical_exit_is_reported_every_minute_and_a_crash_fails() {
    check(
        sonic(),
        vec![
            Feature("pmon", &[("state", "enabled"), ("auto_restart", "disabled")]),
            Boot,
            Ports(true),
            Mark,
            Critical("pmon", "xcvrd"),
            Advance(125_000),
            Show("pmon"),
            Exit("pmon", 1),
            Show("pmon"),
        ],
        "
        pmon: running ready gen 1 restarts 0 \"degraded: critical process xcvrd is not running (2 min); auto-restart is disabled\"
        pmon: failed gen 1 restarts 0 \"exited with code 1; auto-restart is disabled\"
        ",
    );
}

#[test]
fn a_failed_start_counts_against_the_budget_and_backs_off() {
    check(
        crashy(),
        vec![Boot, Mark, FailStart("crashy"), Exit("crashy", 3), Show("crashy"), Advance(200), Show("crashy")],
        "
        start crashy #2
        crashy: restarting gen 2 restarts 2 \"restarting after crash, attempt 2, next in 200ms (start failed: containerd create task failed for crashy)\"
        start crashy #3
        crashy: running ready gen 3 restarts 2
        ",
    );
}
