//! Errors that say what to do: an ambiguous bundle lists the matching digests, a controller address gets
//! its scheme or a clear refusal, an unknown API path answers 404, a selector other than key=value is
//! refused instead of misread, an unreachable controller is named before any token.

use super::http;
use super::support::*;

/// Runs `outpost ARGS`; (exit code, stderr).
fn fails(ctl: &Controller, args: &[&str]) -> (Option<i32>, String) {
    let out = ctl.cli(args);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn operator_errors_name_what_was_wrong_and_what_to_do() {
    let dir = tempdir("operator-errors");
    let (_broker, mqtt) = mosquitto(&dir);
    let ctl = Controller::with_broker(&dir, mqtt);
    let admin = std::fs::read_to_string(ctl.data.join("api-token")).unwrap();
    let (_agent, _) = stoppable_agent(&dir, "dev-eu", mqtt, "region = \"eu\"", 0);
    // Its hello carries its labels (presence alone registers it without them).
    ctl.wait_devices("the device's hello", 60, |l| l.len() == 1 && l[0]["labels"]["region"] == "eu");

    // Two different bundles that both call themselves digits 2.0.0, and a 1.0.0.
    for (name, bytes) in
        [("a", digits_bundle("2.0.0", 2)), ("b", bundle_of("v2", "2.0.0", 3)), ("c", digits_bundle("1.0.0", 1))]
    {
        let out = ctl.push_bundle(&dir, name, bytes);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let digests: Vec<String> = ctl
        .json(&["bundle", "list"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["version"] == "2.0.0")
        .map(|b| b["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(digests.len(), 2);
    let (code, err) = fails(&ctl, &["rollout", "start", "--bundle", "digits@2.0.0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("\"digits@2.0.0\" matches 2 bundles:"), "{err}");
    for d in &digests {
        assert!(err.contains(d.as_str()), "lists {d}: {err}");
    }
    assert!(err.contains("give a longer digest prefix"), "{err}");
    let (_, err) = fails(&ctl, &["rollout", "start", "--bundle", "digits"]);
    assert!(err.contains("the pushed bundles of digits are:") && err.contains("digits@1.0.0"), "{err}");
    assert!(ctl.json(&["rollout", "list", "--all"]).as_array().unwrap().is_empty(), "nothing started");

    // Selectors: equality works, anything else is refused by name (it used to read `region!` as a key).
    let eu = ctl.run(&["devices", "list", "-l", "region=eu"]);
    assert!(eu.contains("dev-eu"), "{eu}");
    for args in [
        &["devices", "list", "-l", "region!=eu"][..],
        &["rollout", "start", "--bundle", "digits@1.0.0", "-l", "region!=eu"][..],
    ] {
        let (code, err) = fails(&ctl, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("\"region!=eu\": only key=value is supported"), "{args:?}: {err}");
    }
    let (status, body) = http(ctl.api_port, "GET", "/api/v1/devices?selector=region!%3Deu", Some(admin.trim()), "");
    assert_eq!(status, 400, "a plain client's selector is refused the same way: {body}");

    // The controller's address: no scheme means http://; another scheme is refused with what to give.
    let port = ctl.api_port.to_string();
    let bare = format!("127.0.0.1:{port}");
    let data = path(&ctl.data);
    let list = outpost(&["devices", "list", "--controller", &bare, "--data-dir", &data]);
    assert!(list.status.success() && String::from_utf8_lossy(&list.stdout).contains("dev-eu"), "{list:?}");
    let mqtt_url = format!("mqtt://127.0.0.1:{mqtt}");
    let wrong = outpost(&["devices", "list", "--controller", &mqtt_url, "--data-dir", &data]);
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(2), "{err}");
    assert!(err.contains("is http:// or https://") && err.contains("not mqtt://"), "{err}");

    // An unreachable controller is named as such, before the missing token.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let out = outpost(&["devices", "list", "--controller", &nowhere, "--data-dir", &path(&dir.join("none"))]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot reach the controller") && !err.contains("token"), "{err}");

    // Unknown API paths answer 404 with what was asked, with or without a token; known ones still 401.
    for token in [None, Some(admin.trim())] {
        let (status, body) = http(ctl.api_port, "GET", "/api/v1/nonsense", token, "");
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("no API path GET /api/v1/nonsense"), "{body}");
    }
    assert_eq!(http(ctl.api_port, "GET", "/api/v1/devices", None, "").0, 401);
    let (status, body) = http(ctl.api_port, "POST", "/api/v1/rollouts/x/explode", Some(admin.trim()), "{}");
    assert_eq!(status, 404, "{body}");
}
