//! `outpost operators add NAME | list | remove NAME`: each person their own API token, so the audit log
//! says who did what. Only the API token (operator `admin`) may manage operators.

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
    /// Make an operator and print their token, once (it is stored hashed). They use it as OUTPOST_TOKEN or
    /// to sign in to the console; what they do is audited with their name.
    ///
    /// Example: outpost operators add ada
    Add {
        /// 1-64 of A-Z a-z 0-9 - _ . @ (not "admin", the API token's name).
        name: String,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// The operators and when each was added (never their tokens).
    ///
    /// Example: outpost operators list
    List {
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Remove an operator: their token stops working and their console sessions end.
    ///
    /// Example: outpost operators remove ada
    Remove {
        /// The operator's name.
        name: String,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
}

pub fn run(a: Args) -> Result<(), Failure> {
    match a.command {
        Command::Add { name, output } => {
            let made = a.remote.post_json("/api/v1/operators", &serde_json::json!({ "name": name }))?;
            match output {
                Output::Json => super::json::print(&made),
                Output::Table => {
                    // The token alone on standard output, so `T=$(outpost operators add ada)` works.
                    println!("{}", made["token"].as_str().unwrap_or_default());
                    eprintln!("operator {name} added: give them this token; it is shown only now");
                }
            }
            Ok(())
        }
        Command::List { output } => {
            let list = a.remote.get("/api/v1/operators")?;
            match output {
                Output::Json => super::json::print(&list),
                Output::Table => {
                    let head = ["OPERATOR", "ADDED (UTC)"].map(String::from).to_vec();
                    let rows = list.as_array().into_iter().flatten().map(|o| {
                        vec![
                            o["name"].as_str().unwrap_or("?").to_owned(),
                            super::audit::utc(o["created"].as_u64().unwrap_or(0)),
                        ]
                    });
                    print!("{}", super::table::render(std::iter::once(head).chain(rows).collect(), &[]));
                }
            }
            Ok(())
        }
        Command::Remove { name, output } => {
            let gone = a.remote.delete(&format!("/api/v1/operators/{name}"))?;
            match output {
                Output::Json => super::json::print(&gone),
                Output::Table => println!("removed operator {name}: their token no longer works"),
            }
            Ok(())
        }
    }
}
