//! The client commands: their arguments, and the API calls each one makes.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use http::Method;
use serde_json::{Value, json};

use super::connection::{ConnectionArgs, Credential, Server};
use super::http::{Api, Body, query, segment};
use super::watch::{Binding, split_module, watch};
use super::{ClientError, print_json};

/// Commands that talk to a running `warden serve` through its API, as any client does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Systems (rooms) on a running host.
    #[command(subcommand)]
    Systems(SystemsCommand),
    /// Zones on a running host.
    #[command(subcommand)]
    Zones(ZonesCommand),
    /// Registered drivers on a running host: upload, build, review, approve, upgrade.
    #[command(subcommand)]
    Drivers(DriversCommand),
    /// Git repositories drivers are built from.
    #[command(subcommand)]
    Repositories(RepositoriesCommand),
    /// Driver builds: their progress, compiler output and records.
    #[command(subcommand)]
    Builds(BuildsCommand),
    /// Modules (device instances) on a running host.
    #[command(subcommand)]
    Modules(ModulesCommand),
    /// Call a function of a module by its name in a system (`Projector_1`).
    Exec(SystemExecArgs),
    /// Print a module's status value, then each change, one JSON line each.
    Watch(WatchArgs),
    /// Search zones, systems, modules and drivers (prefixes, typos and `"phrases"`),
    /// best match first.
    Search(SearchArgs),
}

/// `warden search QUERY`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words and `"quoted phrases"`; every one must match.
    query: String,
    /// Only these types, comma-separated: zone, system, module, driver.
    #[arg(long)]
    types: Option<String>,
    /// Only items filed under this zone.
    #[arg(long)]
    zone: Option<String>,
    /// Only zones with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// At most this many (default 20).
    #[arg(long)]
    limit: Option<u32>,
    /// After skipping this many.
    #[arg(long)]
    offset: Option<u32>,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// `?q=&limit=&offset=`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only records whose name contains this (ignoring case).
    #[arg(long)]
    q: Option<String>,
    /// At most this many (the host's default is 100, its maximum 1,000).
    #[arg(long)]
    limit: Option<u32>,
    /// After skipping this many.
    #[arg(long)]
    offset: Option<u32>,
}

impl ListArgs {
    fn pairs(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("q", self.q.clone()),
            ("limit", self.limit.map(|n| n.to_string())),
            ("offset", self.offset.map(|n| n.to_string())),
        ]
    }
}

/// A record by id.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The record's id.
    id: String,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Debug, Subcommand)]
pub enum SystemsCommand {
    /// List systems.
    List {
        #[command(flatten)]
        list: ListArgs,
        /// Only systems in this zone.
        #[arg(long)]
        zone: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Show one system.
    Show(ShowArgs),
    /// Create a system.
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
        /// A description.
        #[arg(long)]
        description: Option<String>,
        /// A zone it is in; repeat in order (later zones' settings win).
        #[arg(long = "zone", value_name = "ID")]
        zones: Vec<String>,
        /// A module in it; repeat in order (which fixes `Display_1`, `Display_2`).
        #[arg(long = "module", value_name = "ID")]
        modules: Vec<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ZonesCommand {
    /// List zones.
    List {
        #[command(flatten)]
        list: ListArgs,
        /// Only the children of this zone.
        #[arg(long)]
        parent: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Show one zone.
    Show(ShowArgs),
    /// Create a zone.
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
        /// A description.
        #[arg(long)]
        description: Option<String>,
        /// Its parent zone.
        #[arg(long, value_name = "ID")]
        parent: Option<String>,
        /// A tag; repeat for several.
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum DriversCommand {
    /// List drivers.
    List {
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Show one driver.
    Show(ShowArgs),
    /// Upload a driver component; prints the driver, its id and digest. It starts
    /// `pending` review.
    Add {
        /// The component (.wasm).
        file: PathBuf,
        /// The repository of its source, for reviewers.
        #[arg(long)]
        source_repo: Option<String>,
        /// The commit it was built from, for reviewers.
        #[arg(long)]
        source_commit: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Approve a driver's digest (a reviewer's or an administrator's step); the host
    /// signs an attestation of it.
    Approve {
        /// The driver's id.
        id: String,
        /// Why, for the audit log and the attestation.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Withdraw the approval of a driver's digest: every module running it stops.
    Revoke {
        /// The driver's id.
        id: String,
        /// Why, for the audit log.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// The reviewer's view: source and commit, digest, approval, capabilities, imports,
    /// functions, settings (secrets marked) and the changes since the version approved
    /// before.
    Review(ShowArgs),
    /// The signed approval (check it offline with `warden driver verify-attestation`).
    Attestation(ShowArgs),
    /// Whether the driver's repository has commits newer than the one it was built from.
    Updates(ShowArgs),
    /// Move every module of a driver to another approved version, live.
    Upgrade {
        /// The driver whose modules move.
        id: String,
        /// The driver (version) they move to.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Build a driver on the host from a registered repository at an exact commit; prints
    /// the build (follow it with `warden builds show ID`). The driver is registered
    /// `pending` review when the build succeeds.
    Build {
        /// The repository's id (`warden repositories list`).
        #[arg(long)]
        repo: String,
        /// The full commit id.
        #[arg(long)]
        commit: String,
        /// The driver's package inside the repository (`drivers/pjlink`).
        #[arg(long)]
        path: String,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// The host's public keys that sign approvals.
    SigningKeys {
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum RepositoriesCommand {
    /// List repositories.
    List {
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Show one repository.
    Show(ShowArgs),
    /// Register a repository. Credentials for HTTPS are read from the environment
    /// (`WARDEN_GIT_USERNAME`, `WARDEN_GIT_PASSWORD`), never from the command line.
    Add {
        /// A name for it.
        #[arg(long)]
        name: String,
        /// Its git URL, or a path on the host.
        #[arg(long)]
        url: String,
        /// The branch followed for "update available" (default: the remote's default).
        #[arg(long)]
        branch: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Delete a repository and its builds.
    Remove(ShowArgs),
}

#[derive(Debug, Subcommand)]
pub enum BuildsCommand {
    /// List builds, newest first.
    List {
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Show one build: state, stage, compiler output, record.
    Show(ShowArgs),
    /// Cancel a queued or running build.
    Cancel(ShowArgs),
}

#[derive(Debug, Subcommand)]
pub enum ModulesCommand {
    /// List modules.
    List {
        #[command(flatten)]
        list: ListArgs,
        /// Only modules of this driver.
        #[arg(long, value_name = "ID")]
        driver: Option<String>,
        /// Only modules in this system.
        #[arg(long, value_name = "ID")]
        system: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Show one module.
    Show(ShowArgs),
    /// Create a module (stopped; `warden modules start` runs it).
    Create {
        /// Its driver.
        #[arg(long, value_name = "ID")]
        driver: String,
        /// The device: `host:port`, or a base URI (`https://host/path`) for HTTP drivers.
        #[arg(long, value_name = "HOST:PORT|URI")]
        endpoint: Option<String>,
        /// A custom name (instead of the driver's, as in `Projector_1`).
        #[arg(long)]
        name: Option<String>,
        /// Add it to this system, after its other modules.
        #[arg(long, value_name = "ID")]
        system: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Start a module; prints it.
    Start(ShowArgs),
    /// Stop a module; prints it.
    Stop(ShowArgs),
    /// A running module's status: every key, or one.
    State {
        /// The module's id.
        id: String,
        /// One status key.
        key: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Call a function of a module; prints its JSON result.
    Exec {
        /// The module's id.
        id: String,
        /// The function.
        method: String,
        /// Arguments: a JSON array (positional) or object (named).
        #[arg(default_value = "[]", value_name = "ARGS_JSON")]
        args: String,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

#[derive(Debug, Args)]
pub struct SystemExecArgs {
    /// The system's id.
    system: String,
    /// The module's name in the system (`Projector_1`; `Projector` is the first).
    module: String,
    /// The function.
    method: String,
    /// Arguments: a JSON array (positional) or object (named).
    #[arg(default_value = "[]", value_name = "ARGS_JSON")]
    args: String,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The system's id.
    system: String,
    /// The module's name in the system (`Projector_1`, or `Projector` with `--index`).
    module: String,
    /// The status key.
    key: String,
    /// The module's index among those of its name, when the name does not carry it.
    #[arg(long)]
    index: Option<u32>,
    /// Stop after this many values.
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// An API call: what to send, and what to print.
enum Call {
    /// Send one request, print its response.
    One(Method, String, Option<Value>),
    /// Upload a component.
    Upload(String, Vec<u8>),
    /// `POST path`, then print `GET then`.
    Then(String, String),
    /// Create a module, add it to a system, print the module.
    ModuleIntoSystem(Value, String),
}

/// Run `command`; what it prints goes to stdout as JSON.
pub async fn run(command: Command) -> Result<(), ClientError> {
    // Everything local is checked before the credential is read and anything is sent.
    let (connection, call) = match command {
        Command::Watch(args) => return run_watch(args).await,
        Command::Systems(command) => systems(command),
        Command::Zones(command) => zones(command),
        Command::Drivers(command) => drivers(command)?,
        Command::Repositories(command) => repositories(command)?,
        Command::Builds(command) => match command {
            BuildsCommand::List {
                list: args,
                connection,
            } => (connection, list("builds", &args, vec![])),
            BuildsCommand::Show(args) => (args.connection, show("builds", &args.id)),
            BuildsCommand::Cancel(args) => (
                args.connection,
                Call::One(
                    Method::POST,
                    format!("/builds/{}/cancel", segment(&args.id)),
                    None,
                ),
            ),
        },
        Command::Modules(command) => modules(command)?,
        Command::Search(args) => {
            let pairs = vec![
                ("q", Some(args.query)),
                ("types", args.types),
                ("zone", args.zone),
                ("tag", args.tag),
                ("limit", args.limit.map(|n| n.to_string())),
                ("offset", args.offset.map(|n| n.to_string())),
            ];
            let path = format!("/search{}", query(pairs));
            (args.connection, Call::One(Method::GET, path, None))
        }
        Command::Exec(args) => {
            let body = call_args(&args.args)?;
            let path = format!(
                "/systems/{}/{}/{}",
                segment(&args.system),
                segment(&args.module),
                segment(&args.method)
            );
            (args.connection, Call::One(Method::POST, path, Some(body)))
        }
    };
    let server = connection.server()?;
    let credential = Credential::from_env()?;
    let mut api = Api::connect(&server, credential).await?;
    let result = match call {
        Call::One(method, path, body) => {
            let body = body.as_ref().map_or(Body::Empty, Body::Json);
            api.send(method, &path, body).await?
        }
        Call::Upload(path, bytes) => {
            api.send(Method::POST, &path, Body::Bytes("application/wasm", bytes))
                .await?
        }
        Call::Then(path, then) => {
            api.send(Method::POST, &path, Body::Empty).await?;
            api.get(&then).await?
        }
        Call::ModuleIntoSystem(new, system) => {
            let module = api.post("/modules", &new).await?;
            let id = module
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| ClientError::Protocol("the new module has no id".to_string()))?;
            let path = format!("/systems/{}/module/{}", segment(&system), segment(id));
            api.send(Method::PUT, &path, Body::Empty).await?;
            api.get(&format!("/modules/{}", segment(id))).await?
        }
    };
    print_json(&result, server.compact);
    Ok(())
}

fn list(resource: &str, list: &ListArgs, filters: Vec<(&'static str, Option<String>)>) -> Call {
    let mut pairs = list.pairs();
    pairs.extend(filters);
    Call::One(Method::GET, format!("/{resource}{}", query(pairs)), None)
}

fn show(resource: &str, id: &str) -> Call {
    Call::One(Method::GET, format!("/{resource}/{}", segment(id)), None)
}

fn systems(command: SystemsCommand) -> (ConnectionArgs, Call) {
    match command {
        SystemsCommand::List {
            list: args,
            zone,
            connection,
        } => (connection, list("systems", &args, vec![("zone_id", zone)])),
        SystemsCommand::Show(args) => (args.connection, show("systems", &args.id)),
        SystemsCommand::Create {
            name,
            description,
            zones,
            modules,
            connection,
        } => {
            let body = json!({
                "name": name,
                "description": description.unwrap_or_default(),
                "zones": zones,
                "modules": modules,
            });
            (
                connection,
                Call::One(Method::POST, "/systems".to_string(), Some(body)),
            )
        }
    }
}

fn zones(command: ZonesCommand) -> (ConnectionArgs, Call) {
    match command {
        ZonesCommand::List {
            list: args,
            parent,
            connection,
        } => (
            connection,
            list("zones", &args, vec![("parent_id", parent)]),
        ),
        ZonesCommand::Show(args) => (args.connection, show("zones", &args.id)),
        ZonesCommand::Create {
            name,
            description,
            parent,
            tags,
            connection,
        } => {
            let body = json!({
                "name": name,
                "description": description.unwrap_or_default(),
                "parent_id": parent,
                "tags": tags,
            });
            (
                connection,
                Call::One(Method::POST, "/zones".to_string(), Some(body)),
            )
        }
    }
}

fn drivers(command: DriversCommand) -> Result<(ConnectionArgs, Call), ClientError> {
    Ok(match command {
        DriversCommand::List {
            list: args,
            connection,
        } => (connection, list("drivers", &args, vec![])),
        DriversCommand::Show(args) => (args.connection, show("drivers", &args.id)),
        DriversCommand::Add {
            file,
            source_repo,
            source_commit,
            connection,
        } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| ClientError::Usage(format!("reading {}: {e}", file.display())))?;
            if !bytes.starts_with(b"\0asm") {
                return Err(ClientError::Usage(format!(
                    "{} is not a WebAssembly file",
                    file.display()
                )));
            }
            let path = format!(
                "/drivers{}",
                query([
                    ("source_repo", source_repo),
                    ("source_commit", source_commit)
                ])
            );
            (connection, Call::Upload(path, bytes))
        }
        DriversCommand::Approve {
            id,
            note,
            connection,
        } => {
            let body = json!({"approval": "approved", "note": note});
            let path = format!("/drivers/{}/approval", segment(&id));
            (connection, Call::One(Method::POST, path, Some(body)))
        }
        DriversCommand::Revoke {
            id,
            note,
            connection,
        } => {
            let body = json!({"approval": "revoked", "note": note});
            let path = format!("/drivers/{}/approval", segment(&id));
            (connection, Call::One(Method::POST, path, Some(body)))
        }
        DriversCommand::Review(args) => (args.connection, sub("drivers", &args.id, "review")),
        DriversCommand::Attestation(args) => {
            (args.connection, sub("drivers", &args.id, "attestation"))
        }
        DriversCommand::Updates(args) => (args.connection, sub("drivers", &args.id, "updates")),
        DriversCommand::Upgrade { id, to, connection } => {
            let path = format!("/drivers/{}/upgrade", segment(&id));
            (
                connection,
                Call::One(Method::POST, path, Some(json!({"to": to}))),
            )
        }
        DriversCommand::Build {
            repo,
            commit,
            path,
            connection,
        } => {
            let body = json!({"repository_id": repo, "commit": commit, "path": path});
            (
                connection,
                Call::One(Method::POST, "/builds".to_string(), Some(body)),
            )
        }
        DriversCommand::SigningKeys { connection } => (
            connection,
            Call::One(Method::GET, "/signing_keys".to_string(), None),
        ),
    })
}

fn sub(resource: &str, id: &str, what: &str) -> Call {
    Call::One(
        Method::GET,
        format!("/{resource}/{}/{what}", segment(id)),
        None,
    )
}

fn repositories(command: RepositoriesCommand) -> Result<(ConnectionArgs, Call), ClientError> {
    Ok(match command {
        RepositoriesCommand::List {
            list: args,
            connection,
        } => (connection, list("repositories", &args, vec![])),
        RepositoriesCommand::Show(args) => (args.connection, show("repositories", &args.id)),
        RepositoriesCommand::Add {
            name,
            url,
            branch,
            connection,
        } => {
            let username = std::env::var("WARDEN_GIT_USERNAME").ok();
            let password = std::env::var("WARDEN_GIT_PASSWORD").ok();
            let credentials = match (username, password) {
                (Some(username), Some(password)) => {
                    json!({"username": username, "password": password})
                }
                (None, None) => Value::Null,
                _ => {
                    return Err(ClientError::Usage(
                        "set both WARDEN_GIT_USERNAME and WARDEN_GIT_PASSWORD, or neither"
                            .to_string(),
                    ));
                }
            };
            let body =
                json!({"name": name, "url": url, "branch": branch, "credentials": credentials});
            (
                connection,
                Call::One(Method::POST, "/repositories".to_string(), Some(body)),
            )
        }
        RepositoriesCommand::Remove(args) => (
            args.connection,
            Call::One(
                Method::DELETE,
                format!("/repositories/{}", segment(&args.id)),
                None,
            ),
        ),
    })
}

fn modules(command: ModulesCommand) -> Result<(ConnectionArgs, Call), ClientError> {
    Ok(match command {
        ModulesCommand::List {
            list: args,
            driver,
            system,
            connection,
        } => (
            connection,
            list(
                "modules",
                &args,
                vec![("driver_id", driver), ("system_id", system)],
            ),
        ),
        ModulesCommand::Show(args) => (args.connection, show("modules", &args.id)),
        ModulesCommand::Create {
            driver,
            endpoint,
            name,
            system,
            connection,
        } => {
            // A URI (scheme://…) is an HTTP driver's base URI; anything else an endpoint.
            let (endpoint, uri) = match endpoint {
                Some(target) if target.contains("://") => (None, Some(target)),
                other => (other, None),
            };
            let body = json!({
                "driver_id": driver,
                "endpoint": endpoint,
                "uri": uri,
                "custom_name": name,
            });
            let call = match system {
                Some(system) => Call::ModuleIntoSystem(body, system),
                None => Call::One(Method::POST, "/modules".to_string(), Some(body)),
            };
            (connection, call)
        }
        ModulesCommand::Start(args) => {
            let id = segment(&args.id);
            (
                args.connection,
                Call::Then(format!("/modules/{id}/start"), format!("/modules/{id}")),
            )
        }
        ModulesCommand::Stop(args) => {
            let id = segment(&args.id);
            (
                args.connection,
                Call::Then(format!("/modules/{id}/stop"), format!("/modules/{id}")),
            )
        }
        ModulesCommand::State {
            id,
            key,
            connection,
        } => {
            let path = match key {
                Some(key) => format!("/modules/{}/state/{}", segment(&id), segment(&key)),
                None => format!("/modules/{}/state", segment(&id)),
            };
            (connection, Call::One(Method::GET, path, None))
        }
        ModulesCommand::Exec {
            id,
            method,
            args,
            connection,
        } => {
            let body = call_args(&args)?;
            let path = format!("/modules/{}/exec/{}", segment(&id), segment(&method));
            (connection, Call::One(Method::POST, path, Some(body)))
        }
    })
}

/// ARGS_JSON as the call's arguments: a JSON array or object.
fn call_args(text: &str) -> Result<Value, ClientError> {
    let args: Value = serde_json::from_str(text)
        .map_err(|e| ClientError::Usage(format!("ARGS_JSON is not JSON: {e}")))?;
    if !matches!(args, Value::Array(_) | Value::Object(_)) {
        return Err(ClientError::Usage(
            "ARGS_JSON must be a JSON array (positional) or object (named)".to_string(),
        ));
    }
    Ok(args)
}

async fn run_watch(args: WatchArgs) -> Result<(), ClientError> {
    let (module, index) = split_module(&args.module, args.index)?;
    let binding = Binding {
        sys: args.system,
        module,
        index,
        name: args.key,
    };
    let server: Server = args.connection.server()?;
    let credential = Credential::from_env()?;
    let ended = watch(&server, credential, &binding, args.count, |value| {
        use std::io::Write as _;
        // One line per value whatever `--compact` says, for line-reading scripts.
        let mut out = std::io::stdout().lock();
        writeln!(out, "{value}").and_then(|()| out.flush()).is_ok()
    })
    .await?;
    tracing::debug!(?ended, "watch ended");
    Ok(())
}
