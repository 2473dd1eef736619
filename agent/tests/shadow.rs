//! Shadow evaluation: a candidate runs beside the active model on sampled live requests, after the
//! answer is sent, and the agent reports how often the two agree.

mod support;

use outpost_agent::install::{self, Target, Trust};
use outpost_agent::store::Store;
use support::*;

fn agreement_after_traffic(agent: &Agent, candidate_version: &str) -> f64 {
    agent.wait_for("/outpost/v1/status", "the shadow candidate", |r| {
        r.json()["models"]["digits"]["candidate"]["version"] == candidate_version
    });
    let (images, _) = test_set();
    for image in &images[..200] {
        let r = agent.post("/v2/models/digits/infer", &infer_body(std::slice::from_ref(image)));
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["model_version"], "1.0.0", "the active model answers, never the candidate");
    }
    // Shadow work runs after the answers; wait until the candidate has seen (nearly) all of it.
    let s = agent.wait_for("/outpost/v1/status", "shadow comparisons", |r| {
        r.json()["models"]["digits"]["shadow_compared"].as_u64() >= Some(190)
    });
    s.json()["models"]["digits"]["shadow_agreement"].as_f64().unwrap()
}

#[test]
fn shadow_reports_high_agreement_for_v2_and_low_agreement_for_the_bad_model() {
    let dir = tempdir("shadow");
    // Every request is shadowed; the queue is large enough that none is skipped; no cache.
    let cfg = config(&dir, "[shadow]\nsample_percent = 100\nqueue_capacity = 512\n[cache]\nmax_entries = 0\n");
    let store = Store::open(&cfg.data_dir).unwrap();
    let trust = Trust::load(&cfg).unwrap();
    install::install(&store, &trust, &signed_bundle("v1", "1.0.0", 1), now(), Target::Activate).unwrap();
    install::install(
        &store,
        &trust,
        &signed_bundle("v2", "2.0.0", 2),
        now(),
        Target::Candidate { shadow_percent: 100 },
    )
    .unwrap();
    let agent = Agent::start(cfg);

    let good = agreement_after_traffic(&agent, "2.0.0");
    install::install(
        &store,
        &trust,
        &signed_bundle("bad", "2.0.1", 3),
        now(),
        Target::Candidate { shadow_percent: 100 },
    )
    .unwrap();
    let bad = agreement_after_traffic(&agent, "2.0.1");
    println!("shadow agreement: v1 vs v2 {good:.3}, v1 vs bad {bad:.3}");
    assert!(good >= 0.95, "v2 agrees with v1: {good}");
    assert!(bad <= 0.3, "the scrambled model disagrees: {bad}");

    let metrics = agent.get("/metrics").text();
    assert!(metrics.contains("outpost_shadow_agreement"), "{metrics}");
    // Shadowing never changed what is committed.
    let slots = store.slots().unwrap();
    assert_eq!(slots.floor("digits"), 1);
    assert!(slots.model("digits").unwrap().previous.is_none());
}
