//! `GET /api/v1/devices`: which devices, how many at a time and in what detail. A device's full record
//! is about 13 KB with two models (their last 16 update events each, the planner's evidence): 13 MB for
//! 1,000 devices, 1.3 GB for 100,000, built in one answer. So the list pages, as kubectl's `--chunk-size`
//! does (`limit`, then `after` = the last id of the page before, in id order), and the brief view leaves
//! out what only `devices show` uses. Pure: the query and the shaping; the handler reads the fleet.

use super::registry::DeviceRecord;
use outpost_protocol::DeviceId;
use std::collections::HashMap;

/// The most devices one page may ask for.
pub const MAX_PAGE: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// `selector=k=v,...`: every pair holds.
    pub selector: Vec<(String, String)>,
    /// `after=ID`: the page starts after this id (need not be a device that exists).
    pub after: Option<DeviceId>,
    /// `limit=N`: at most this many; without it the whole fleet (the console and older scripts ask so).
    pub limit: Option<usize>,
    /// `view=brief`: see [`brief`].
    pub brief: bool,
}

impl ListQuery {
    /// The query string's parameters; an error names the parameter and what it takes.
    pub fn parse(q: &HashMap<String, String>) -> Result<ListQuery, String> {
        if let Some(k) = q.keys().find(|k| !["selector", "after", "limit", "view"].contains(&k.as_str())) {
            return Err(format!("unknown parameter {k:?}: the device list takes selector, after, limit and view"));
        }
        let selector = q.get("selector").map(|s| super::api::parse_selector(s)).transpose()?.unwrap_or_default();
        let after = q
            .get("after")
            .map(|s| DeviceId::new(s).map_err(|e| format!("after={s:?} is not a device id: {e}")))
            .transpose()?;
        let limit = q
            .get("limit")
            .map(|s| match s.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
                _ => Err(format!("limit={s:?}: give a number of devices from 1 to {MAX_PAGE}")),
            })
            .transpose()?;
        let brief = match q.get("view").map(String::as_str) {
            None | Some("full") => false,
            Some("brief") => true,
            Some(v) => return Err(format!("view={v:?}: the device list's views are full and brief")),
        };
        Ok(ListQuery { selector, after, limit, brief })
    }

    /// Whether the device belongs in the list (`after` is applied by the caller's range).
    pub fn selects(&self, d: &DeviceRecord) -> bool {
        super::api::matches(d, &self.selector)
    }

    /// The record as this query lists it.
    pub fn shape(&self, d: DeviceRecord) -> DeviceRecord {
        if self.brief { brief(d) } else { d }
    }
}

/// The record without what only `devices show` and the planner use: each model keeps its latest update
/// event (the list's MODELS column shows it) and its latest window; the planner's evidence and the events
/// waiting for their second copy are left out. About a quarter of the full record's size.
pub fn brief(mut d: DeviceRecord) -> DeviceRecord {
    d.evidence = None;
    for log in d.models.values_mut() {
        let keep = log.events.len().saturating_sub(1);
        log.events.drain(..keep);
        log.unmatched_live.clear();
        log.unmatched_recorded.clear();
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::registry::LoggedEvent;
    use outpost_protocol::ModelName;
    use outpost_protocol::telemetry::{UpdateEvent, UpdateStage};

    fn q(pairs: &[(&str, &str)]) -> Result<ListQuery, String> {
        ListQuery::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn the_query_takes_a_page_and_a_view_and_names_what_it_refuses() {
        let all = q(&[]).unwrap();
        assert_eq!((all.limit, all.after.clone(), all.brief), (None, None, false), "no parameters: the whole list");
        let page = q(&[("limit", "500"), ("after", "edge-07"), ("view", "brief"), ("selector", "region=eu")]).unwrap();
        assert_eq!(page.limit, Some(500));
        assert_eq!(page.after, Some(DeviceId::new("edge-07").unwrap()));
        assert!(page.brief);
        assert_eq!(page.selector, vec![("region".to_owned(), "eu".to_owned())]);
        for (bad, says) in [
            (("limit", "0"), "limit=\"0\": give a number of devices from 1 to 10000"),
            (("limit", "10001"), "from 1 to 10000"),
            (("limit", "-1"), "limit=\"-1\""),
            (("after", "a/b"), "after=\"a/b\" is not a device id"),
            (("view", "summary"), "view=\"summary\": the device list's views are full and brief"),
            (("page", "2"), "unknown parameter \"page\""),
        ] {
            let e = q(&[bad]).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_brief_view_keeps_each_models_latest_event_and_leaves_out_the_evidence() {
        let mut d = DeviceRecord::new(DeviceId::new("edge-01").unwrap(), 1_760_000_000);
        let digits = ModelName::new("digits").unwrap();
        let events = &mut d.models.entry(digits.clone()).or_default().events;
        for (i, to) in [UpdateStage::Fetching, UpdateStage::Watching, UpdateStage::Committed].into_iter().enumerate() {
            let event = UpdateEvent {
                rollout: Some("r1".into()),
                model: digits.clone(),
                version: outpost_protocol::Version::new(2, 0, 0),
                bundle: outpost_protocol::Digest([7; 32]),
                from: UpdateStage::Idle,
                to,
                reason: None,
                detail: String::new(),
                seq: i as u64,
            };
            events.push_back(LoggedEvent { event, at: Some(1_760_000_000 + i as u64) });
        }
        d.evidence = Some(d.view());
        let full = q(&[]).unwrap().shape(d.clone());
        assert_eq!(full, d, "the full view is the record");
        let b = q(&[("view", "brief")]).unwrap().shape(d.clone());
        assert_eq!(b.evidence, None);
        let kept: Vec<UpdateStage> = b.models[&digits].events.iter().map(|e| e.event.to).collect();
        assert_eq!(kept, vec![UpdateStage::Committed], "the latest event, as the list's MODELS column shows it");
        assert_eq!(b.model_summaries(), d.model_summaries(), "what the list prints is unchanged");
    }
}
