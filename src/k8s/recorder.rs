//! The kubelet's event recorder rules (pure), for events.k8s.io: an event identical to one
//! seen in the last six minutes becomes a series (its count patched on the second, then every
//! thirty minutes, and once more when the run ends) instead of a new object; and a spam
//! filter per object (a token bucket of 25, one more every five minutes) drops the rest, as
//! client-go's recorder does, so a crash loop cannot flood the API server.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use super::cluster::{EventSpec, EventType, Regarding, Series};
use crate::supervisor::Now;

/// Identical events within this long of the last one are one series (client-go's finishTime).
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// A series' count is sent at most this often after its second event (client-go's refreshTime).
pub const SERIES_REFRESH: Duration = Duration::from_secs(30 * 60);
/// The spam filter: events per object in a burst, and the time to earn one more.
pub const BURST: u32 = 25;
pub const REFILL: Duration = Duration::from_secs(300);

/// Something worth an Event, before the recorder decides what to send.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Occurrence {
    pub regarding: Regarding,
    pub event_type: EventType,
    pub reason: String,
    pub action: String,
    pub note: String,
}

/// What to send the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emit {
    Create(EventSpec),
    Series { namespace: String, name: String, series: Series },
}

#[derive(Debug, Clone)]
struct Tracked {
    name: String,
    count: u32,
    sent: u32,
    last_observed: Instant,
    last_observed_wall: SystemTime,
    last_sent: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct Recorder {
    reporting_instance: String,
    series: BTreeMap<Occurrence, Tracked>,
    buckets: BTreeMap<Regarding, Bucket>,
    /// Events the spam filter dropped.
    pub dropped: u64,
    /// The last name's nanoseconds: names only grow.
    last_nanos: u128,
}

impl Regarding {
    /// `Node/leaf1` or `Pod/sonic/telemetry-x8k2p`: one spam filter each.
    pub fn object_name(&self) -> String {
        match self {
            Regarding::Node(name) => format!("Node/{name}"),
            Regarding::Pod { namespace, name, .. } => format!("Pod/{namespace}/{name}"),
        }
    }

    fn name(&self) -> &str {
        match self {
            Regarding::Node(name) | Regarding::Pod { name, .. } => name,
        }
    }
}

impl Recorder {
    pub fn new(reporting_instance: &str) -> Self {
        Self {
            reporting_instance: reporting_instance.to_owned(),
            series: BTreeMap::new(),
            buckets: BTreeMap::new(),
            dropped: 0,
            last_nanos: 0,
        }
    }

    /// The spam filter's verdict for one more event about `regarding`.
    fn admit(&mut self, regarding: &Regarding, now: Instant) -> bool {
        let bucket = self.buckets.entry(regarding.clone()).or_insert(Bucket { tokens: f64::from(BURST), at: now });
        let earned = now.saturating_duration_since(bucket.at).as_secs_f64() / REFILL.as_secs_f64();
        bucket.tokens = (bucket.tokens + earned).min(f64::from(BURST));
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// `<object>.<hex nanoseconds>`, as the kubelet names events; unique even within a
    /// nanosecond.
    fn name_for(&mut self, regarding: &Regarding, wall: SystemTime) -> String {
        let nanos = wall.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        self.last_nanos = nanos.max(self.last_nanos + 1);
        format!("{}.{:x}", regarding.name(), self.last_nanos)
    }

    /// One occurrence: a new Event, the second of a series, or nothing to send now.
    pub fn record(&mut self, occurrence: Occurrence, now: Now) -> Option<Emit> {
        if let Some(tracked) = self.series.get_mut(&occurrence) {
            if now.mono.saturating_duration_since(tracked.last_observed) <= SERIES_WINDOW {
                tracked.count += 1;
                tracked.last_observed = now.mono;
                tracked.last_observed_wall = now.wall;
                if tracked.count == 2 {
                    tracked.sent = 2;
                    tracked.last_sent = now.mono;
                    let series = Series { count: 2, last_observed: now.wall };
                    let namespace = occurrence.regarding.event_namespace().to_owned();
                    return Some(Emit::Series { namespace, name: tracked.name.clone(), series });
                }
                return None;
            }
        }
        if !self.admit(&occurrence.regarding, now.mono) {
            self.dropped += 1;
            return None;
        }
        let name = self.name_for(&occurrence.regarding, now.wall);
        let event = EventSpec {
            name: name.clone(),
            regarding: occurrence.regarding.clone(),
            event_type: occurrence.event_type,
            reason: occurrence.reason.clone(),
            action: occurrence.action.clone(),
            note: occurrence.note.clone(),
            time: now.wall,
            reporting_instance: self.reporting_instance.clone(),
        };
        let tracked = Tracked {
            name,
            count: 1,
            sent: 1,
            last_observed: now.mono,
            last_observed_wall: now.wall,
            last_sent: now.mono,
        };
        self.series.insert(occurrence, tracked);
        Some(Emit::Create(event))
    }

    /// Series counts due (every thirty minutes, and once when a run ends), and runs over.
    pub fn tick(&mut self, now: Now) -> Vec<Emit> {
        let mut due = Vec::new();
        self.series.retain(|occurrence, tracked| {
            let finished = now.mono.saturating_duration_since(tracked.last_observed) > SERIES_WINDOW;
            let refresh = now.mono.saturating_duration_since(tracked.last_sent) >= SERIES_REFRESH;
            if tracked.count > tracked.sent && (finished || refresh) {
                tracked.sent = tracked.count;
                tracked.last_sent = now.mono;
                let series = Series { count: tracked.count, last_observed: tracked.last_observed_wall };
                let namespace = occurrence.regarding.event_namespace().to_owned();
                due.push(Emit::Series { namespace, name: tracked.name.clone(), series });
            }
            !finished
        });
        due
    }

    /// When [`Recorder::tick`] next has something to do.
    pub fn next_tick(&self) -> Option<Instant> {
        self.series
            .values()
            .map(|t| {
                let finish = t.last_observed + SERIES_WINDOW + Duration::from_millis(1);
                if t.count > t.sent {
                    finish.min(t.last_sent + SERIES_REFRESH)
                } else {
                    finish
                }
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crash(note: &str) -> Occurrence {
        Occurrence {
            regarding: Regarding::Node("leaf1".into()),
            event_type: EventType::Warning,
            reason: "ServiceCrashed".into(),
            action: "Restart".into(),
            note: note.into(),
        }
    }

    fn clock() -> (Instant, SystemTime) {
        (Instant::now(), SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
    }

    fn at(base: (Instant, SystemTime), secs: u64) -> Now {
        Now { mono: base.0 + Duration::from_secs(secs), wall: base.1 + Duration::from_secs(secs) }
    }

    fn kind(emit: &Option<Emit>) -> String {
        match emit {
            Some(Emit::Create(e)) => format!("create {}", e.name),
            Some(Emit::Series { namespace, name, series }) => format!("series {namespace}/{name} {}", series.count),
            None => "-".into(),
        }
    }

    #[test]
    fn identical_events_become_a_series_sent_on_the_second_then_at_the_runs_end() {
        let base = clock();
        let mut recorder = Recorder::new("leaf1");
        let first = recorder.record(crash("syncd crashed"), at(base, 0));
        let Some(Emit::Create(event)) = &first else { panic!("{first:?}") };
        assert_eq!(event.name, format!("leaf1.{:x}", 1_800_000_000u128 * 1_000_000_000));
        assert_eq!(event.reporting_instance, "leaf1");
        let name = event.name.clone();
        assert_eq!(kind(&recorder.record(crash("syncd crashed"), at(base, 10))), format!("series default/{name} 2"));
        assert_eq!(kind(&recorder.record(crash("syncd crashed"), at(base, 20))), "-");
        assert_eq!(kind(&recorder.record(crash("syncd crashed"), at(base, 30))), "-");
        // A different note is another event.
        assert!(matches!(recorder.record(crash("bgp crashed"), at(base, 31)), Some(Emit::Create(_))));
        assert!(recorder.tick(at(base, 60)).is_empty(), "nothing due within the window");
        // Six minutes after its last, the run is over: its count is sent once, then forgotten.
        let due = recorder.tick(at(base, 30 + 361));
        let Emit::Series { name: due_name, series, namespace } = &due[0] else { panic!("{due:?}") };
        assert_eq!(namespace, "default", "a Node's Events live in default");
        assert_eq!((due_name, series.count), (&name, 4));
        assert_eq!(series.last_observed, at(base, 30).wall);
        assert_eq!(due.len(), 1, "bgp's single event needs no series: {due:?}");
        assert!(matches!(recorder.record(crash("syncd crashed"), at(base, 400)), Some(Emit::Create(_))));
    }

    #[test]
    fn a_long_run_sends_its_count_every_thirty_minutes() {
        let base = clock();
        let mut recorder = Recorder::new("leaf1");
        recorder.record(crash("x"), at(base, 0));
        recorder.record(crash("x"), at(base, 1));
        let mut sent = Vec::new();
        for minute in 1..=61 {
            recorder.record(crash("x"), at(base, minute * 60));
            sent.extend(recorder.tick(at(base, minute * 60)).into_iter().map(|e| kind(&Some(e))));
        }
        assert_eq!(sent.len(), 2, "{sent:?}");
        // Two at the start, one a minute: 33 at minute 31 (thirty minutes after the second
        // was sent), 63 thirty minutes later.
        assert!(sent[0].ends_with(" 33"), "{sent:?}");
        assert!(sent[1].ends_with(" 63"), "{sent:?}");
    }

    #[test]
    fn the_spam_filter_admits_a_burst_of_25_then_one_per_five_minutes() {
        let base = clock();
        let mut recorder = Recorder::new("leaf1");
        let created = (0..40)
            .filter(|i| matches!(recorder.record(crash(&format!("crash {i}")), at(base, 0)), Some(Emit::Create(_))))
            .count();
        assert_eq!((created, recorder.dropped), (25, 15));
        assert!(recorder.record(crash("later"), at(base, 299)).is_none());
        assert!(matches!(recorder.record(crash("later still"), at(base, 301)), Some(Emit::Create(_))));
        // Another object has a bucket of its own.
        let pod = Occurrence {
            regarding: Regarding::Pod { namespace: "sonic".into(), name: "telemetry-x".into(), uid: "u".into() },
            ..crash("crash 0")
        };
        assert!(matches!(recorder.record(pod, at(base, 301)), Some(Emit::Create(_))));
    }

    #[test]
    fn names_are_unique_within_one_nanosecond() {
        let base = clock();
        let mut recorder = Recorder::new("leaf1");
        let names: Vec<String> = (0..3)
            .filter_map(|i| match recorder.record(crash(&format!("{i}")), at(base, 0)) {
                Some(Emit::Create(e)) => Some(e.name),
                _ => None,
            })
            .collect();
        assert_eq!(names.len(), 3);
        assert!(names[0] < names[1] && names[1] < names[2], "{names:?}");
    }
}
