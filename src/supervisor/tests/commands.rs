//! Operator commands around the lifecycle: waits, shutdown, requests that go away, and the
//! systemd units the core starts when services come up on their own.

use super::*;

#[test]
fn a_wait_answers_once_every_enabled_service_is_ready() {
    check(
        sonic(),
        vec![Cmd(Command::Wait { services: Vec::new(), stopped: false }), Boot, Mark, Ports(true)],
        "
        start pmon #1
        start snmp #1
        reply 1 ok status
        ",
    );
}

#[test]
fn a_wait_for_an_unknown_service_or_one_that_fails_is_answered_with_why() {
    let crashy = svc("crashy", "auto-restart = false");
    check(
        set(&[("crashy", &crashy)]),
        vec![
            Boot,
            Mark,
            Cmd(Command::Wait { services: vec!["nosuch".into()], stopped: false }),
            Exit("crashy", 2),
            Cmd(Command::Wait { services: vec!["crashy".into()], stopped: false }),
        ],
        "
        reply 1 NotFound: unknown service \"nosuch\"
        reply 2 Failed: crashy failed: exited with code 2; auto-restart is disabled
        ",
    );
}

#[test]
fn a_shutdown_that_stops_services_stops_them_in_reverse_order_then_ends() {
    check(
        sonic(),
        vec![Boot, Ports(true), Mark, Cmd(Command::Shutdown { stop_services: true })],
        "
        stop pmon cold
        stop bgp cold
        stop snmp cold
        stop syncd cold
        stop swss cold
        stop database cold
        reply 1 ok
        exit
        ",
    );
}

#[test]
fn a_shutdown_that_keeps_services_ends_at_once() {
    check(sonic(), vec![Boot, Mark, Cmd(Command::Shutdown { stop_services: false })], "reply 1 ok\nexit");
}

#[test]
fn a_requester_that_goes_away_is_forgotten() {
    let mut world = World::new(set(&[("a", &svc("a", "")), ("b", &svc("b", "requires = [\"a\"]"))]));
    world.step(Image("a:1", "sha256:never", Behaviour::NeverReady));
    world.step(Boot);
    world.step(Cmd(Command::Wait { services: vec!["b".into()], stopped: false }));
    world.feed(Event::RequestGone(RequestId(1)));
    world.step(Mark);
    world.step(Advance(30_000));
    // a is restarted after its readiness timeout; nobody is answered.
    assert_eq!(world.take_trace(), vec!["stop a cold", "start a #2"]);
    assert!(world.replies.is_empty());
}

#[test]
fn units_start_when_their_services_come_up_on_their_own_not_on_an_operators_stop() {
    let mut world = World::with(sonic(), BootType::Cold, true);
    run(
        &mut world,
        vec![Trace(&["unit"]), Boot, Ports(true), Mark, stop("snmp"), Exit("bgp", 1), Mark, Restart],
        "
        start unit bgp
        start unit database
        start unit pmon
        start unit swss
        start unit syncd
        ",
    );
}
