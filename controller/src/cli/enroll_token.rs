//! `outpost enroll-token create [--auto-approve] [--expires 7d] [--max-uses N] [--devices PATTERN...] | list`:
//! the secrets devices enroll with.
//! The controller keeps only their hash; `create` prints the token once, alone on stdout, so
//! `outpost enroll-token create > token` writes the file an image carries.

use super::client::Remote;
use super::{Failure, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Make a token; print it once.
    ///
    /// Example: outpost enroll-token create --auto-approve --expires 2d --max-uses 50 --devices 'site1-*'
    Create {
        /// Devices that enroll with it get their certificate at once; otherwise they wait for
        /// `outpost devices approve ID`.
        #[arg(long = "auto-approve")]
        auto_approve: bool,
        /// How long it can be used, e.g. 7d, 12h.
        #[arg(long, default_value = "7d")]
        expires: String,
        /// How many devices may enroll with it (a leaked image enrolls no more than this).
        #[arg(long = "max-uses", default_value_t = crate::daemon::enroll::DEFAULT_MAX_USES)]
        max_uses: u64,
        /// Only these device ids may enroll with it: exact ids or patterns with `*` (`--devices 'site1-*'`);
        /// repeat or separate with commas. Default: any id.
        #[arg(long = "devices", value_delimiter = ',')]
        devices: Vec<String>,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Tokens (ids, expiry, uses; never the secrets).
    ///
    /// Example: outpost enroll-token list -o json
    List {
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
}

pub fn run(a: Args) -> Result<(), Failure> {
    match a.command {
        Command::Create { auto_approve, expires, max_uses, devices, output } => {
            let secs = super::parse_lifetime(&expires).map_err(|e| Failure::Error(format!("--expires: {e}")))?;
            if secs == 0 {
                return Err(Failure::Error("--expires: a token must live longer than 0 seconds".into()));
            }
            let body = serde_json::json!({
                "auto_approve": auto_approve, "expires_secs": secs, "max_uses": max_uses, "devices": devices,
            });
            let t = a.remote.post_json("/api/v1/enroll-tokens", &body)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&t).expect("json")),
                Output::Table => {
                    println!("{}", t["token"].as_str().unwrap_or_default());
                    let ids = if devices.is_empty() { "any device id".to_string() } else { devices.join(", ") };
                    eprintln!(
                        "token {} ({}; up to {max_uses} device(s); {ids}), expires at {}: it is shown only now",
                        t["id"].as_str().unwrap_or("?"),
                        if auto_approve { "auto-approve" } else { "devices wait for approval" },
                        t["expires"]
                    );
                }
            }
            Ok(())
        }
        Command::List { output } => {
            let list = a.remote.get("/api/v1/enroll-tokens")?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&list).expect("json"));
                return Ok(());
            }
            print!("{}", list_table(list.as_array().map_or(&[][..], Vec::as_slice)));
            Ok(())
        }
    }
}

/// `enroll-token list` for people: expiry as a UTC time (it was Unix seconds), uses of the cap, the
/// device ids a token is limited to.
fn list_table(list: &[serde_json::Value]) -> String {
    let head = ["TOKEN", "AUTO-APPROVE", "EXPIRES (UTC)", "USES", "DEVICES"].map(String::from).to_vec();
    let rows = list.iter().map(|t| {
        let uses = match t["max_uses"].as_u64() {
            Some(max) => format!("{}/{max}", t["uses"]),
            None => t["uses"].to_string(),
        };
        let ids: Vec<&str> = t["devices"].as_array().into_iter().flatten().filter_map(|d| d.as_str()).collect();
        vec![
            t["id"].as_str().unwrap_or("?").to_owned(),
            if t["auto_approve"] == true { "yes" } else { "no" }.to_owned(),
            super::audit::utc(t["expires"].as_u64().unwrap_or(0)),
            uses,
            if ids.is_empty() { "any".to_string() } else { ids.join(",") },
        ]
    });
    super::table::render(std::iter::once(head).chain(rows).collect(), &[])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_token_list_shows_expiry_in_utc_and_aligns() {
        let list = [
            serde_json::json!({"id": "tok-1", "auto_approve": true, "expires": 1_796_515_200, "uses": 2, "max_uses": 100, "devices": []}),
            serde_json::json!({"id": "tok-long-id", "auto_approve": false, "expires": 1_796_601_600, "uses": 0, "max_uses": 5, "devices": ["site1-*"]}),
        ];
        let text = super::list_table(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "TOKEN        AUTO-APPROVE  EXPIRES (UTC)        USES   DEVICES", "{text}");
        assert_eq!(lines[1], "tok-1        yes           2026-12-06 00:00:00  2/100  any", "{text}");
        assert_eq!(lines[2], "tok-long-id  no            2026-12-07 00:00:00  0/5    site1-*", "{text}");
    }
}
