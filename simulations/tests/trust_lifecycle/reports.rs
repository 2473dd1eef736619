//! Forged and replayed version reports; unsigned claims stay claimed.

use super::*;

/// What a device sends on `up/report`, as a plain subscriber on the broker sees it.
fn reports(port: u16, device: &str) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let topic = topics::up(&DeviceId::new(device).unwrap(), topics::Up::Report);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let id = format!("listener-{}", free_port());
            let mut o = rumqttc::MqttOptions::new(id.clone(), "127.0.0.1", port);
            // The embedded broker wants a login name from everyone but checks only the controller's.
            o.set_credentials(id, "");
            let (client, mut events) = rumqttc::AsyncClient::new(o, 8);
            client.subscribe(topic, rumqttc::QoS::AtLeastOnce).await.unwrap();
            while let Ok(e) = events.poll().await {
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = e
                    && tx.send(p.payload.to_vec()).is_err()
                {
                    return;
                }
            }
        });
    });
    rx
}

fn signed(bytes: &[u8]) -> SignedVersionReport {
    let Ok(Message::Report(r)) = codec::decode(bytes, &Limits::default()) else { panic!("not a report") };
    r
}

#[test]
fn forged_and_replayed_version_reports_are_caught_and_claims_stay_claimed() {
    let dir = tempdir("trust-reports");
    let mqtt = free_port();
    let (_, root_pub) = trust_files(&dir);
    let ctl = Controller::start(
        &dir,
        &[
            "--mqtt-listen",
            &format!("127.0.0.1:{mqtt}"),
            "--trust",
            &path(&dir.join("trust.policy")),
            "--root-pub",
            &path(&root_pub),
        ],
    );
    wait_port(mqtt);
    let token = ctl.run(&["enroll-token", "create", "--auto-approve"]).trim().to_owned();
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    let config = format!(
        "[link]\nenroll_token = {:?}\nlabels = {{ site = \"lab\" }}\n[telemetry]\nwindow = \"1s\"\n",
        path(&dir.join("token"))
    );
    let heard = reports(mqtt, "dev-0");
    let (_agent, api) = stoppable_agent_config(&dir, "dev-0", mqtt, 0, &config);
    let ids = ["dev-0"];
    wait_until(
        "dev-0 enrolled and attested by its enrolled key",
        60,
        || ctl.device("dev-0")["attestation"]["last"]["binding"] == "enrollment",
        || ctl.context(&ids),
    );
    assert!(ctl.push_bundle(&dir, "v1", bundle_of("v1", "1.0.0", 1)).status.success());
    assert!(ctl.push_bundle(&dir, "v2", bundle_of("v2", "1.0.1", 2)).status.success());
    ctl.rollout("digits@1.0.0", "first");
    wait_until("1.0.0", 60, || serving(api).as_deref() == Some("1.0.0"), || ctl.context(&ids));
    let attested = |version: &str| {
        ctl.run(&["devices", "show", "dev-0"]).contains(&format!("running   {version} (sequence"))
            && ctl.run(&["devices", "show", "dev-0"]).contains(") attested")
    };
    wait_until("1.0.0 attested", 30, || attested("1.0.0"), || ctl.context(&ids));
    ctl.run(&["rollout", "abort", "first"]);
    ctl.rollout("digits@1.0.1", "second");
    wait_until(
        "1.0.1 attested",
        60,
        || serving(api).as_deref() == Some("1.0.1") && attested("1.0.1"),
        || ctl.context(&ids),
    );
    // A report that said 1.0.0, heard on the way.
    let old = heard
        .try_iter()
        .map(|b| signed(&b))
        .find(|r| {
            postcard::from_bytes::<VersionReport>(&r.report)
                .unwrap()
                .running
                .iter()
                .any(|m| m.version == Version::new(1, 0, 0))
        })
        .expect("a report of 1.0.0 was heard");
    let report_topic = topics::up(&DeviceId::new("dev-0").unwrap(), topics::Up::Report);
    let fault = |code: &str| {
        wait_until(
            &format!("the controller refuses it with {code}"),
            20,
            || ctl.device("dev-0")["attestation"]["last_fault"]["code"] == code,
            || ctl.context(&ids),
        );
    };
    // 1. Replayed: the device's own, correctly signed, older report.
    publish(mqtt, &report_topic, codec::encode(&Message::Report(old.clone())), false);
    fault("replay");
    // 2. Tampered on the way.
    let mut tampered = old.clone();
    let n = tampered.report.len();
    tampered.report[n - 1] ^= 1;
    publish(mqtt, &report_topic, codec::encode(&Message::Report(tampered)), false);
    fault("bad_signature");
    // 3. Forged: a report claiming 9.9.9, signed by a key that is not the device's.
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let forger = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let nine = RunningModel {
        name: ModelName::new("digits").unwrap(),
        version: Version::new(9, 9, 9),
        digest: Digest([9; 32]),
        sequence: 99,
    };
    let mut claim: VersionReport = postcard::from_bytes(&old.report).unwrap();
    claim.counter = u64::MAX / 2;
    claim.running = vec![nine.clone()];
    use ring::signature::KeyPair as _;
    let forged = SignedVersionReport::new(&claim, forger.public_key().as_ref().to_vec(), |m| {
        forger.sign(&rng, m).unwrap().as_ref().try_into().unwrap()
    });
    publish(mqtt, &report_topic, codec::encode(&Message::Report(forged)), false);
    fault("wrong_key");
    let audit = ctl.run(&["audit"]);
    for code in ["replay", "bad_signature", "wrong_key"] {
        assert!(audit.contains(code), "refused reports are audited ({code}):\n{audit}");
    }
    assert!(attested("1.0.1"), "what the device runs stays attested: {}", ctl.context(&ids));
    // 4. An unsigned hello claiming 9.9.9 changes what is claimed, never what is attested.
    let hello = Hello {
        device: DeviceId::new("dev-0").unwrap(),
        arch: Arch::current().unwrap_or(Arch::X86_64),
        agent_version: outpost_agent::version(),
        labels: vec![],
        running: vec![nine],
        boot_id: 1,
        max_packet: 1 << 20,
    };
    publish(mqtt, &topics::up(&hello.device.clone(), topics::Up::Hello), codec::encode(&Message::Hello(hello)), false);
    wait_until(
        "the forged claim is shown as claimed only",
        20,
        || ctl.run(&["devices", "show", "dev-0"]).contains("running   9.9.9 (sequence 99, model 090909090909) claimed"),
        || ctl.context(&ids),
    );
    assert!(
        ctl.run(&["skew"]).contains("9.9.9  1 online, 0 offline; 0 attested, 1 only claimed"),
        "{}",
        ctl.run(&["skew"])
    );
}
