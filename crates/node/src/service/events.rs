//! The event bus: container, image, volume and network events, kept in a bounded history
//! (for `since`) and broadcast to live subscribers (for `docker events`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// One event, in the shape of the Engine API's `EventMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `container`, `image`, `volume`, `network`, `daemon`.
    pub kind: &'static str,
    /// `create`, `start`, `die`, `destroy`, `pull`, `tag`, ...
    pub action: String,
    /// ID (or name, for images and volumes) of the object.
    pub actor_id: String,
    pub attributes: BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch.
    pub time_nano: i64,
}

impl Event {
    /// An event stamped with the current time.
    pub fn now(
        kind: &'static str,
        action: &str,
        actor_id: &str,
        attributes: BTreeMap<String, String>,
    ) -> Self {
        let time_nano = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        Event {
            kind,
            action: action.into(),
            actor_id: actor_id.into(),
            attributes,
            time_nano,
        }
    }
}

/// Which events a subscriber wants, as dockerd's events filter decides: each key's values
/// are OR'ed, keys AND'ed; empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub kinds: Vec<String>,
    /// Exact actions; `health_status`, `exec_create` or `exec_start` among them make every
    /// value match as a prefix too (dockerd's rule for actions with a `: detail`).
    pub actions: Vec<String>,
    /// Match the actor ID or its `name` attribute, exactly or as a prefix.
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub networks: Vec<String>,
    /// Match the actor ID or the image name (the `image` attribute; an image event's
    /// `name`), exactly or without its tag.
    pub images: Vec<String>,
    /// `key` or `key=value` over attributes; all must match.
    pub labels: Vec<String>,
}

/// A reference without its tag or digest: `127.0.0.1:5000/busybox:latest` ->
/// `127.0.0.1:5000/busybox` (dockerd's `stripTag`, familiar form).
fn strip_tag(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let image = match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    };
    image
        .strip_prefix("docker.io/library/")
        .or_else(|| image.strip_prefix("docker.io/"))
        .unwrap_or(image)
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        let any = |list: &[String], f: &dyn Fn(&str) -> bool| {
            list.is_empty() || list.iter().any(|x| f(x))
        };
        let name = e.attributes.get("name").map_or("", String::as_str);
        let fuzzy = |v: &str| {
            e.actor_id == v || e.actor_id.starts_with(v) || name == v || name.starts_with(v)
        };
        let prefix_actions = self
            .actions
            .iter()
            .any(|a| matches!(a.as_str(), "health_status" | "exec_create" | "exec_start"));
        let image_name = if e.kind == "image" {
            name
        } else {
            e.attributes.get("image").map_or("", String::as_str)
        };
        any(&self.kinds, &|k| k == e.kind)
            && any(&self.actions, &|a| {
                a == e.action || (prefix_actions && e.action.starts_with(a))
            })
            && any(&self.containers, &fuzzy)
            && any(&self.volumes, &fuzzy)
            && any(&self.networks, &fuzzy)
            && any(&self.images, &|i| {
                [e.actor_id.as_str(), image_name]
                    .iter()
                    .any(|s| *s == i || strip_tag(s) == i)
            })
            && self.labels.iter().all(|l| match l.split_once('=') {
                Some((k, v)) => e.attributes.get(k).is_some_and(|x| x == v),
                None => e.attributes.contains_key(l.as_str()),
            })
    }
}

const HISTORY: usize = 1024;

/// Publishes events and hands out subscriptions.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    history: Arc<Mutex<VecDeque<Event>>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        EventBus {
            tx: broadcast::channel(HISTORY).0,
            history: Arc::new(Mutex::new(VecDeque::with_capacity(HISTORY))),
        }
    }

    pub fn publish(&self, e: Event) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(e.clone());
        // Sent under the history lock, so a subscriber sees each event once: in the
        // snapshot or on the channel.
        let _ = self.tx.send(e);
    }

    /// Past events at or after `since_nano` and a receiver for events after them.
    pub fn subscribe(&self, since_nano: Option<i64>) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let past = match since_nano {
            Some(since) => h.iter().filter(|e| e.time_nano >= since).cloned().collect(),
            None => Vec::new(),
        };
        (past, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &'static str, action: &str, id: &str, t: i64) -> Event {
        Event {
            kind,
            action: action.into(),
            actor_id: id.into(),
            attributes: [("name".to_string(), format!("n-{id}"))].into(),
            time_nano: t,
        }
    }

    #[test]
    fn since_replays_history_then_live_events_follow() {
        let bus = EventBus::new();
        bus.publish(ev("container", "create", "a", 10));
        bus.publish(ev("container", "start", "a", 20));
        let (past, mut rx) = bus.subscribe(Some(15));
        assert_eq!(past, vec![ev("container", "start", "a", 20)]);
        bus.publish(ev("image", "pull", "busybox", 30));
        assert_eq!(rx.try_recv().unwrap(), ev("image", "pull", "busybox", 30));
    }

    #[test]
    fn filters_select_by_type_action_object_and_label() {
        let mut e = ev("container", "exec_start: sh", "abcdef", 1);
        e.attributes
            .insert("image".into(), "127.0.0.1:5000/busybox:latest".into());
        assert!(EventFilter::default().matches(&e));
        let f = EventFilter {
            kinds: vec!["container".into()],
            actions: vec!["exec_start".into()],
            containers: vec!["abc".into()],
            labels: vec!["name=n-abcdef".into()],
            ..Default::default()
        };
        assert!(f.matches(&e));
        let by_name = EventFilter {
            containers: vec!["n-abc".into()],
            ..Default::default()
        };
        assert!(by_name.matches(&e));
        let other = EventFilter {
            kinds: vec!["image".into()],
            ..Default::default()
        };
        assert!(!other.matches(&e));
        // Keys are AND'ed: a container filter and an image filter both apply.
        let both = |image: &str| EventFilter {
            containers: vec!["abc".into()],
            images: vec![image.into()],
            ..Default::default()
        };
        assert!(both("127.0.0.1:5000/busybox").matches(&e));
        assert!(both("127.0.0.1:5000/busybox:latest").matches(&e));
        assert!(!both("web").matches(&e));
        // Exact actions unless one of dockerd's prefix actions is asked for.
        let exact = EventFilter {
            actions: vec!["exec".into()],
            ..Default::default()
        };
        assert!(!exact.matches(&e));
        let die = ev("container", "health_status: healthy", "abcdef", 1);
        let health = EventFilter {
            actions: vec!["health_status".into()],
            ..Default::default()
        };
        assert!(health.matches(&die));
        let volume = EventFilter {
            volumes: vec!["data".into()],
            ..Default::default()
        };
        assert!(!volume.matches(&e));
        assert!(volume.matches(&ev("volume", "create", "data", 1)));
    }
}
