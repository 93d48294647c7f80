//! Crash safety without a failpoint: each scenario runs once to count its persists, then
//! again once per persist, the daemon dying right after that write (before it is
//! acknowledged, so nothing that waited for it happened). A new core is built from the disk
//! and the containers that run, and must converge: no journal left, every wanted service
//! ready on exactly the image its pins say, generations never reused, and the change ending
//! the way its journal step on disk calls for.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::images::release::{Release, ReleaseEntry};
use crate::sonic::configdb::ConfigContent;
use crate::state::history::ChangeResult;
use crate::state::store::{ChangeKind, ChangeStep};
use crate::supervisor::event::ChangeRequest;

fn images() -> Vec<Step> {
    vec![
        Image("bgp:2", "sha256:b2", Behaviour::Ready),
        Image("bgp:exits", "sha256:bx", Behaviour::Exits(3)),
        Image("swss:2", "sha256:s2", Behaviour::Ready),
    ]
}

fn upgrade(service: &str, reference: &str, warm: bool) -> Step {
    Cmd(Command::Change(ChangeRequest {
        service: service.to_owned(),
        kind: ChangeKind::Upgrade,
        source: Some(ImageSource::Stored(reference.to_owned())),
        name: None,
        digest: None,
        warm,
        timeout: Some(Duration::from_secs(20)),
        settle: Some(Duration::from_secs(2)),
    }))
}

/// A scenario: what it is, and what it does after the switch booted.
type Scenario = (&'static str, fn() -> Vec<Step>);

fn scenarios() -> Vec<Scenario> {
    vec![
        ("boot", Vec::new),
        ("upgrade that succeeds", || vec![upgrade("bgp", "bgp:2", false), Advance(2_000)]),
        ("upgrade rolled back", || vec![upgrade("bgp", "bgp:exits", false), Advance(2_000)]),
        ("warm upgrade of swss", || vec![upgrade("swss", "swss:2", true), Advance(2_000)]),
        ("cold upgrade of swss", || vec![upgrade("swss", "swss:2", false), Advance(2_000)]),
        ("operator stop and start", || vec![stop("swss"), start("bgp")]),
        ("config reload", || vec![Cmd(Command::Reload { config: ConfigContent::new(), force: true }), Ports(true)]),
        ("syncd crash", || vec![Exit("syncd", 137)]),
        ("release", || {
            let entry = |service: &str, image: &str, digest: &str| ReleaseEntry {
                service: name(service),
                image: image.to_owned(),
                digest: digest.to_owned(),
                archive: None,
                warm: false,
            };
            let release = Release {
                name: "r".into(),
                entries: vec![entry("bgp", "bgp:2", "sha256:b2"), entry("swss", "swss:2", "sha256:s2")],
            };
            vec![
                Cmd(Command::Release { release, timeout: None, settle: Some(Duration::from_secs(1)) }),
                Advance(1_000),
                Advance(1_000),
            ]
        }),
    ]
}

fn script(scenario: fn() -> Vec<Step>) -> Vec<Step> {
    let mut steps = images();
    steps.extend([Trace(&["persist"]), Boot, Ports(true)]);
    steps.extend(scenario());
    steps
}

/// The image digest each service's pins (or manifest) name, by the world's image store.
fn expected_images(world: &World) -> BTreeMap<String, String> {
    world
        .manifests
        .names()
        .filter_map(|n| {
            let reference = world.core().image_reference(n.as_str())?;
            Some((n.to_string(), world.images.get(&reference)?.digest.clone()))
        })
        .collect()
}

/// Every start of a service has a generation above all its earlier ones.
fn assert_generations_fresh(trace: &[String], what: &str) {
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for line in trace {
        let Some(rest) = line.strip_prefix("start ") else { continue };
        let mut parts = rest.split_whitespace();
        let (Some(service), Some(generation)) = (parts.next(), parts.next()) else { continue };
        let generation: u64 = generation.trim_start_matches('#').parse().unwrap();
        if let Some(before) = last.insert(service, generation) {
            assert!(generation > before, "{what}: {service} reused generation {generation} after {before}");
        }
    }
}

#[test]
fn a_crash_after_any_persist_of_any_scenario_converges() {
    let mut runs = 0;
    let mut steps_seen = std::collections::BTreeSet::new();
    let mut releases_seen = 0;
    for (what, scenario) in scenarios() {
        let mut full = World::new(sonic());
        for step in script(scenario) {
            full.step(step);
        }
        let persists = full.persisted.len();
        assert!(persists > 0, "{what}: no persist at all");
        for crash in 1..=persists {
            let at = format!("{what}, crash after persist {crash} of {persists}");
            let mut world = World::new(sonic());
            world.crash_at = Some(crash);
            for step in script(scenario) {
                world.step(step);
            }
            let journal = world.disk().change.clone();
            // Every change whose journal reached the disk before the crash is in the history
            // once, whether it ended before the crash or after the restart (a release resumed
            // from its own journal may add more).
            let journaled: std::collections::BTreeSet<(String, u64)> = world
                .persisted
                .iter()
                .filter_map(|s| s.change.as_ref().map(|j| (j.service.clone(), j.started_ms)))
                .collect();
            if let Some(journal) = &journal {
                steps_seen
                    .insert(format!("{:?}", journal.step).split([' ', '{']).next().unwrap_or_default().to_owned());
            }
            releases_seen += usize::from(world.disk().release.is_some());
            let mut trace = world.take_trace();
            world.restart();
            world.step(Ports(true));
            world.advance(Duration::from_secs(30));
            world.step(Ports(true));
            world.advance(Duration::from_secs(30));
            trace.extend(world.take_trace());
            assert_generations_fresh(&trace, &at);
            assert!(world.disk().change.is_none(), "{at}: a journal is left: {:?}", world.disk().change);
            assert!(world.disk().release.is_none(), "{at}: a release journal is left");
            let images = expected_images(&world);
            for service in world.manifests.names() {
                let view = super::super::status::service_view(world.core(), service);
                if !view.enabled {
                    assert!(world.pid(service.as_str()).is_none(), "{at}: {service} runs but is not wanted");
                    continue;
                }
                assert!(view.ready, "{at}: {}", world.show(service.as_str()));
                assert_eq!(
                    world.running_image(service.as_str()).as_ref(),
                    images.get(service.as_str()),
                    "{at}: {service} runs another image than its pins"
                );
            }
            let recorded: Vec<(String, String)> =
                world.history.iter().map(|e| (e.service.clone(), e.started.clone())).collect();
            let wanted: Vec<(String, String)> = journaled
                .iter()
                .map(|(service, ms)| {
                    let started = std::time::UNIX_EPOCH + Duration::from_millis(*ms);
                    (service.clone(), crate::supervisor::change::rfc3339_ms(started))
                })
                .collect();
            for change in &wanted {
                assert!(recorded.contains(change), "{at}: {change:?} was journaled but is not in the history");
            }
            let distinct: std::collections::BTreeSet<_> = recorded.iter().collect();
            assert_eq!(distinct.len(), recorded.len(), "{at}: a change is in the history twice: {recorded:?}");
            // The change ends the way its journal on disk calls for.
            if let Some(journal) = journal {
                let last = world.history.last().unwrap_or_else(|| panic!("{at}: no history after {journal:?}"));
                let expected = match (&journal.step, journal.to.digest.as_str()) {
                    (ChangeStep::Preparing, _) => ChangeResult::Aborted,
                    (ChangeStep::Switching, "sha256:bx") | (ChangeStep::RollingBack { .. }, _) => {
                        ChangeResult::RolledBack
                    }
                    (ChangeStep::Switching, _) => ChangeResult::Succeeded,
                };
                assert_eq!(last.result, expected, "{at}: journal {:?}", journal.step);
                let running = world.running_image(&journal.service).unwrap();
                let ends_on =
                    if expected == ChangeResult::Succeeded { &journal.to.digest } else { &journal.from.digest };
                assert_eq!(&running, ends_on, "{at}: {} ends on the wrong image", journal.service);
            }
            runs += 1;
        }
    }
    assert!(runs >= 40, "only {runs} crash points");
    let every_step: std::collections::BTreeSet<String> =
        ["Preparing", "RollingBack", "Switching"].into_iter().map(str::to_owned).collect();
    assert_eq!(steps_seen, every_step, "a crash with each journal step on disk");
    assert!(releases_seen >= 3, "crashes in the middle of a release: {releases_seen}");
    eprintln!("{runs} crash points converged");
}

#[test]
fn a_journal_naming_a_service_whose_manifest_is_gone_is_aborted_not_a_crash_loop() {
    let scenario = || vec![upgrade("bgp", "bgp:2", false)];
    let mut full = World::new(sonic());
    for step in script(scenario) {
        full.step(step);
    }
    let journaled = full.persisted.iter().position(|s| s.change.is_some()).expect("the change is journaled") + 1;
    let mut world = World::new(sonic());
    world.crash_at = Some(journaled);
    for step in script(scenario) {
        world.step(step);
    }
    assert!(world.disk().change.as_ref().is_some_and(|j| j.service == "bgp"), "crashed with a journal");
    // The next daemon has no bgp manifest.
    let without_bgp = set(&[("database", &svc("database", "database = true")), ("pmon", &svc("pmon", ""))]);
    let mut next = World::new(without_bgp);
    next.disk = world.disk().clone();
    next.restart();
    assert!(next.disk().change.is_none(), "the journal is closed");
    let last = next.history.last().expect("the change is in the history");
    assert_eq!(last.result, ChangeResult::Aborted);
    assert!(last.reason.as_deref().unwrap_or_default().contains("the manifest of bgp is gone"), "{last:?}");
}
