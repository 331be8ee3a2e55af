//! Where each event type goes, in the shape the route statement takes: parallel
//! arrays, one entry per event type (`unnest($1::text[], ...)` in [`crate::claim`]).
//!
//! A disabled route, or delivery paused as a whole (`N8N_ENABLED=false`,
//! `WEBHOOK_QUEUE_ENABLED=false`), never drops an event: events are still routed into
//! `webhook_queue` as `pending`; only claiming them for delivery waits.

use relay_core::pause::Scope;
use relay_core::Config;

#[derive(Debug, Clone)]
pub(crate) struct RouteTable {
    pub(crate) events: Vec<String>,
    pub(crate) urls: Vec<String>,
    pub(crate) priorities: Vec<i32>,
    /// Whether rows of this route may be claimed for delivery now.
    pub(crate) claimable: Vec<bool>,
    /// `webhook_queue.ordering` for rows of this route: NULL, `skip` or `block`.
    pub(crate) ordering: Vec<Option<String>>,
    /// `webhook_queue.ordering_scope`: `lifecycle` for routes ordered across routes.
    pub(crate) scopes: Vec<Option<String>>,
    /// `webhook_queue.max_retries` for rows of this route.
    pub(crate) max_retries: Vec<i32>,
    /// Event types whose queued rows wait (their route is disabled).
    pub(crate) held: Vec<String>,
    pub(crate) delivering: bool,
}

impl RouteTable {
    pub(crate) fn new(config: &Config) -> RouteTable {
        let delivering = config.delivery_enabled();
        let routes = config.routes();
        RouteTable {
            events: routes
                .iter()
                .map(|r| r.event.as_str().to_string())
                .collect(),
            urls: routes.iter().map(|r| r.url.clone()).collect(),
            priorities: routes.iter().map(|r| r.priority).collect(),
            claimable: routes.iter().map(|r| delivering && r.enabled).collect(),
            ordering: routes
                .iter()
                .map(|r| r.ordered.map(|o| o.as_str().to_string()))
                .collect(),
            scopes: routes
                .iter()
                .map(|r| r.lifecycle.then(|| "lifecycle".to_string()))
                .collect(),
            max_retries: routes
                .iter()
                .map(|r| i32::try_from(r.retry.max_retries).unwrap_or(i32::MAX))
                .collect(),
            held: routes
                .iter()
                .filter(|r| !r.enabled)
                .map(|r| r.event.as_str().to_string())
                .collect(),
            delivering,
        }
    }
}

impl RouteTable {
    /// This table with `pauses` applied: a paused event type is held like a disabled
    /// route; everything paused stops claiming altogether. Events are still routed,
    /// as `pending`, and a route to a paused URL claims none of its fresh events.
    /// Also returns the paused URLs: their queued rows, whatever event they carry,
    /// wait because a paused URL has no room (`Steering::limit`), so a URL pause does
    /// not hold the event type's rows queued for other URLs.
    pub(crate) fn paused(&self, pauses: &[Scope]) -> (RouteTable, Vec<String>) {
        let mut table = self.clone();
        let urls: Vec<String> = pauses
            .iter()
            .filter_map(|p| match p {
                Scope::Url(u) => Some(u.clone()),
                _ => None,
            })
            .collect();
        if pauses.contains(&Scope::All) {
            table.delivering = false;
        }
        for i in 0..table.events.len() {
            let event_paused = pauses.contains(&Scope::Event(table.events[i].clone()));
            let held = event_paused || !table.delivering;
            if held || urls.contains(&table.urls[i]) {
                table.claimable[i] = false;
            }
            if held && !table.held.contains(&table.events[i]) {
                table.held.push(table.events[i].clone());
            }
        }
        (table, urls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_event_or_url_is_held_and_pausing_all_stops_delivery() {
        let config = Config::default();
        let base = RouteTable::new(&config);
        let (t, urls) = base.paused(&[Scope::Event("lead_scraped".into())]);
        assert_eq!(t.held, vec!["lead_scraped".to_string()]);
        assert!(urls.is_empty() && t.delivering);
        assert_eq!(t.claimable.iter().filter(|c| !**c).count(), 1);

        let qualified = config
            .routes()
            .into_iter()
            .find(|r| r.event.as_str() == "lead_qualified")
            .map(|r| r.url)
            .unwrap_or_default();
        let (t, urls) = base.paused(&[Scope::Url(qualified.clone())]);
        assert!(
            t.held.is_empty(),
            "a URL pause holds by room, not by event type"
        );
        assert_eq!(t.claimable.iter().filter(|c| !**c).count(), 1);
        assert_eq!(urls, vec![qualified]);

        let (t, _) = base.paused(&[Scope::All]);
        assert!(!t.delivering && t.claimable.iter().all(|c| !c));
        assert_eq!(t.events.len(), 12, "everything still routes");
        let (t, _) = base.paused(&[]);
        assert_eq!(t.claimable, base.claimable);
    }

    #[test]
    fn paused_delivery_routes_everything_but_claims_nothing() {
        let mut config = Config::default();
        config.n8n.enabled = false;
        let table = RouteTable::new(&config);
        assert_eq!(table.events.len(), 12);
        assert!(table.claimable.iter().all(|c| !c));
        assert!(!table.delivering);
    }

    #[test]
    fn a_disabled_route_is_held_not_dropped() {
        let mut config = Config::default();
        config.routes.insert(
            "demo_failed".into(),
            relay_core::config::RouteConfig {
                enabled: Some(false),
                ..Default::default()
            },
        );
        let table = RouteTable::new(&config);
        assert_eq!(table.held, vec!["demo_failed".to_string()]);
        assert_eq!(table.events.len(), 12, "the disabled route still routes");
        assert_eq!(table.claimable.iter().filter(|c| !**c).count(), 1);
    }
}
