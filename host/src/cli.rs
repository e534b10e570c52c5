//! The `warden` command line: `warden driver inspect` and `warden driver run`, the
//! reviewer's and the driver author's tools; `warden keys` and `warden audit`, the
//! operator's tools for the master keys and the audit log of an installation; `warden
//! user create`, local accounts (the first administrator among them). The commands that
//! talk to a running host through its API (`warden systems`, `warden exec`, `warden
//! watch`, …) are [`crate::client`]'s.

mod attestation;
mod build;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::capability::{BaseUri, Endpoint};
use crate::component::{self, Inspection, TransportKind};
use crate::crypto::KeyId;
use crate::data_dir::DataDir;
use crate::runtime::{
    ExecOptions, ModuleConfig, ModuleState, Runtime, RuntimeConfig, RuntimeEvent, offer,
};
use crate::transport::ConnectionOptions;

/// Warden: a host for sandboxed building-automation drivers.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about)]
pub struct Cli {
    /// Where compiled components are cached [env: WARDEN_CACHE_DIR]
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host: the modules stored as running, and the HTTPS API.
    Serve(ServeArgs),
    /// Inspect and run driver components.
    #[command(subcommand)]
    Driver(DriverCommand),
    /// The master keys that seal settings at rest: status, rotation, retirement.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Local accounts, on an installation's data directory (the host need not run).
    #[command(subcommand)]
    User(UserCommand),
    /// API keys, on an installation's data directory: the operator's way to a first
    /// credential for scripts and the CLI client.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    #[command(flatten)]
    Client(crate::client::Command),
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Create an API key for a user; it is printed once and stored only as a hash.
    Create(ApiKeyCreateArgs),
}

#[derive(Debug, Args)]
struct ApiKeyCreateArgs {
    /// The user's email or username.
    #[arg(long)]
    user: String,
    /// What the key is for.
    #[arg(long)]
    name: String,
    /// `public` (everything the user may do, the default) or `read`.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Days until it stops working (default: never).
    #[arg(long)]
    expires_in_days: Option<u32>,
    #[command(flatten)]
    store: StoreOptions,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a local account; `--admin` makes the first administrator of a new
    /// installation without the setup token. The password is read from standard input
    /// (`--password-stdin`) or generated and printed once.
    Create(UserCreateArgs),
}

#[derive(Debug, Args)]
struct UserCreateArgs {
    /// Email address (the login name).
    #[arg(long)]
    email: String,
    /// Username (default: the email).
    #[arg(long)]
    username: Option<String>,
    /// First name.
    #[arg(long, default_value = "")]
    first_name: String,
    /// Last name.
    #[arg(long, default_value = "")]
    last_name: String,
    /// A role (admin, support, user, reviewer); repeat for several.
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Shorthand for `--role admin`.
    #[arg(long)]
    admin: bool,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    store: StoreOptions,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The configuration file [default: ./warden.toml when it exists]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address and port of the HTTPS API [default: 127.0.0.1:8443]
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    store: StoreOptions,
    /// DEVELOPMENT ONLY: treat every API request as an administrator (sign-in is not
    /// built yet). Never expose a host started with this.
    #[arg(long)]
    danger_no_auth: bool,
    /// DEVELOPMENT ONLY: start modules of drivers no reviewer approved.
    #[arg(long)]
    danger_allow_unapproved: bool,
}

/// Where an installation keeps its data.
#[derive(Debug, Args)]
struct StoreOptions {
    /// The data directory (database and master key file) [env: WARDEN_DATA_DIR]
    /// [default: ./warden-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A database URL instead of the SQLite file in the data directory
    /// (postgres://user@host/db) [env: WARDEN_DATABASE_URL]
    #[arg(long)]
    database_url: Option<String>,
}

impl StoreOptions {
    fn data_dir(&self) -> DataDir {
        DataDir::from_options(self.data_dir.clone(), self.database_url.clone())
    }
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Show the keys (ids only) and how many sealed records each one holds.
    Status(StoreOptions),
    /// Add a new key, make it active and re-encrypt every record under it, in batches,
    /// while a running host goes on working.
    Rotate(StoreOptions),
    /// Remove a key from the key file; refused while any record is sealed under it.
    Retire {
        /// The key's id.
        id: u32,
        #[command(flatten)]
        store: StoreOptions,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check every entry's hash chain and the head; exit status 1 when it is broken.
    Verify(StoreOptions),
}

#[derive(Debug, Subcommand)]
enum DriverCommand {
    /// Show a component's digest, metadata, imports and exports without running it.
    Inspect(InspectArgs),
    /// Start one module of a driver against a device, exec one function, print the result.
    Run(RunArgs),
    /// Check an exported approval attestation offline against the host's public key
    /// (and, with --component, that a component is the approved one).
    VerifyAttestation(attestation::VerifyAttestationArgs),
    /// Build a driver from a git repository at an exact commit, reproducibly, and write
    /// the component with its build record.
    Build(build::BuildArgs),
    /// Rebuild a driver from its source at a commit and check that components someone
    /// else built are byte-for-byte that build (exit 1 when one differs).
    Verify(build::VerifyArgs),
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// The driver component (.wasm).
    file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The commit the component was registered or delivered as: flag it (exit 1) when
    /// the commit embedded in the component is another or missing.
    #[arg(long, value_name = "SHA")]
    expect_commit: Option<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The driver component (.wasm).
    file: PathBuf,
    /// The device: host:port for TCP, TLS and UDP drivers, a base URI
    /// (https://host:port/path) for HTTP drivers; not used by logic drivers.
    #[arg(long)]
    endpoint: Option<String>,
    /// Module settings, a JSON object merged over the driver's defaults.
    #[arg(long, default_value = "{}")]
    settings: String,
    /// The function to run.
    #[arg(long)]
    exec: String,
    /// Arguments: a JSON array (positional) or object (named).
    #[arg(long, default_value = "[]")]
    args: String,
    /// Time allowed for the function, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Time allowed to connect to the device first, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    connect_timeout_ms: u64,
    /// Connect for each command and close when idle, instead of staying connected.
    #[arg(long)]
    make_break: bool,
    /// Most linear memory the driver may use, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_mib: usize,
    /// Most CPU time one call into the driver may use, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    cpu_ms_per_call: u64,
    /// HTTP drivers: the largest response body accepted, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
}

/// Run the command line; the process exit code is 0 on success, 1 when the device or
/// driver failed, 2 when the input (file, arguments) was unusable.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let cache_dir = cli
        .cache_dir
        .or_else(|| std::env::var_os("WARDEN_CACHE_DIR").map(PathBuf::from))
        .unwrap_or_else(default_cache_dir);
    let result = match cli.command {
        Command::Driver(DriverCommand::Inspect(args)) => inspect(&args),
        Command::Driver(DriverCommand::Run(args)) => run(&args, cache_dir),
        Command::Driver(DriverCommand::VerifyAttestation(args)) => {
            attestation::verify_attestation(&args)
        }
        Command::Driver(DriverCommand::Build(args)) => build::build(&args),
        Command::Driver(DriverCommand::Verify(args)) => build::verify(&args),
        Command::Serve(args) => block_on(async move {
            crate::serve::serve(crate::serve::ServeOptions {
                config: args.config,
                listen: args.listen,
                data_dir: args.store.data_dir,
                database_url: args.store.database_url,
                danger_no_auth: args.danger_no_auth,
                danger_allow_unapproved: args.danger_allow_unapproved,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Keys(command) => block_on(keys(command)),
        Command::Audit(AuditCommand::Verify(store)) => block_on(audit_verify(store)),
        Command::User(UserCommand::Create(args)) => block_on(user_create(args)),
        Command::ApiKey(ApiKeyCommand::Create(args)) => block_on(api_key_create(args)),
        Command::Client(command) => Ok(crate::client::run(command)),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn block_on(work: impl Future<Output = anyhow::Result<ExitCode>>) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(work)
}

async fn user_create(args: UserCreateArgs) -> anyhow::Result<ExitCode> {
    use std::io::BufRead as _;
    use zeroize::Zeroizing;

    let (password, generated) = if args.password_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        (
            Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string()),
            false,
        )
    } else {
        let secret = crate::auth::secret::Secret::generate(crate::auth::secret::SecretKind::Form);
        let random: String = secret.expose().chars().skip(7).take(24).collect();
        (Zeroizing::new(random), true)
    };
    let mut roles = args.roles.clone();
    if args.admin && !roles.iter().any(|r| r == "admin") {
        roles.push("admin".to_string());
    }
    // A new installation starts here as well as with `warden serve`.
    let store = args.store.data_dir().open_store(true).await?;
    let auth = crate::auth::Auth::new(
        store.clone(),
        &crate::auth::AuthConfig::default(),
        "https://localhost",
    )?;
    let new = crate::store::NewUser {
        email: args.email.clone(),
        username: args.username.clone(),
        first_name: args.first_name.clone(),
        last_name: args.last_name.clone(),
        roles,
        auth_source: crate::auth::LOCAL_SOURCE.to_string(),
    };
    let user = auth
        .create_local_user(
            &crate::store::Actor("cli".to_string()),
            &new,
            password.clone(),
        )
        .await?;
    store.close().await;
    println!(
        "created {} ({}), roles {}",
        user.email,
        user.id,
        user.roles.join(", ")
    );
    if generated {
        println!("password (shown once): {}", password.as_str());
    }
    Ok(ExitCode::SUCCESS)
}

async fn api_key_create(args: ApiKeyCreateArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.data_dir().open_store(false).await?;
    let user = store
        .user_by_login(&args.user)
        .await?
        .with_context(|| format!("no user {}", args.user))?;
    let auth = crate::auth::Auth::new(
        store.clone(),
        &crate::auth::AuthConfig::default(),
        "https://localhost",
    )?;
    let expires_at = args
        .expires_in_days
        .map(|days| store.now() + i64::from(days) * 24 * 60 * 60 * 1000);
    let (record, key) = auth
        .create_api_key(
            &crate::store::Actor("cli".to_string()),
            &crate::store::NewApiKey {
                user_id: user.id.clone(),
                name: args.name.clone(),
                scopes: args.scopes.clone(),
                expires_at,
            },
        )
        .await?;
    store.close().await;
    eprintln!(
        "API key {} for {} (scopes {}); send it as X-API-Key. It is shown once:",
        record.id,
        user.email,
        record.scopes.join(", ")
    );
    println!("{}", key.expose());
    Ok(ExitCode::SUCCESS)
}

async fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let (options, retire) = match &command {
        KeysCommand::Status(options) | KeysCommand::Rotate(options) => (options, None),
        KeysCommand::Retire { id, store } => (store, Some(KeyId(*id))),
    };
    let data_dir = options.data_dir();
    let store = data_dir.open_store(false).await?;
    if let KeysCommand::Rotate(_) = command {
        let report = store.rotate_keys().await?;
        println!(
            "key {} is now active; {} sealed records re-encrypted under it",
            report.active, report.resealed
        );
    }
    if let Some(id) = retire {
        store.retire_key(id).await?;
        println!(
            "key {id} retired and removed from {}",
            data_dir.key_file().display()
        );
    }
    let ring = store.keys().current()?;
    let counts = store.records_by_key().await?;
    println!("master keys ({})", data_dir.key_file().display());
    for id in ring.ids() {
        let records = counts
            .iter()
            .find(|(key, _)| *key == id.0)
            .map_or(0, |(_, n)| *n);
        let active = if ring.active().id() == id {
            "  active"
        } else {
            ""
        };
        println!("  key {}: {records} records{active}", id.0);
    }
    for (key, records) in counts
        .iter()
        .filter(|(key, _)| ring.key(KeyId(*key)).is_none())
    {
        println!("  key {key}: {records} records  NOT LOADED: these records cannot be read");
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn audit_verify(options: StoreOptions) -> anyhow::Result<ExitCode> {
    let store = options.data_dir().open_store(false).await?;
    let verification = store.verify_audit().await?;
    store.close().await;
    match verification.broken {
        None => {
            println!(
                "audit log intact: {} entries, head {}",
                verification.entries, verification.head
            );
            Ok(ExitCode::SUCCESS)
        }
        Some((seq, why)) => {
            println!(
                "audit log BROKEN at entry {seq}: {why} ({} entries before it verified)",
                seq - 1
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("warden").join("components")
}

fn read_component(path: &Path) -> anyhow::Result<Inspection> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    component::inspect(&bytes).with_context(|| format!("inspecting {}", path.display()))
}

/// The JSON form of an inspection, as `warden driver inspect --json` prints it.
pub fn inspection_json(inspection: &Inspection) -> Value {
    let metadata = &inspection.metadata;
    json!({
        "digest": inspection.digest,
        "size": inspection.size,
        "name": metadata.name,
        "generic_name": metadata.generic_name,
        "description": metadata.description,
        "version": metadata.version,
        "transport": metadata.transport,
        "default_port": metadata.default_port,
        "wit": metadata.wit,
        "sdk": metadata.sdk,
        "functions": metadata.functions.iter().map(|f| json!({
            "name": f.name,
            "description": f.description,
            "level": f.level,
            "params": f.params,
            "returns": f.returns,
        })).collect::<Vec<_>>(),
        "settings_schema": metadata.settings_schema,
        "default_settings": metadata.default_settings,
        "imports": inspection.imports,
        "exports": inspection.exports,
        "refused_imports": offer::refused_imports(&inspection.imports),
        "capabilities": inspection.capabilities(),
        "provenance": inspection.provenance,
        "secret_settings": metadata.secret_settings(),
    })
}

/// Whether the commit embedded in `inspection` is `expected`: `None` when nothing was
/// expected, otherwise the problem, if any.
fn commit_mismatch(inspection: &Inspection, expected: Option<&str>) -> Option<Option<String>> {
    let expected = expected?.trim().to_ascii_lowercase();
    let embedded = inspection
        .provenance
        .as_ref()
        .and_then(|provenance| provenance.commit.as_deref());
    Some(match embedded {
        Some(commit) if commit == expected => None,
        Some(commit) => Some(format!(
            "the component was built from commit {commit}, not {expected}"
        )),
        None => Some(format!(
            "the component names no source commit, so it cannot be shown to be {expected}"
        )),
    })
}

fn inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let inspection = read_component(&args.file)?;
    let mismatch = commit_mismatch(&inspection, args.expect_commit.as_deref());
    let code = match &mismatch {
        Some(Some(_)) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    };
    if args.json {
        let mut json = inspection_json(&inspection);
        if let (Some(problem), Some(object)) = (&mismatch, json.as_object_mut()) {
            object.insert("commit_matches".into(), Value::Bool(problem.is_none()));
            object.insert("commit_problem".into(), json!(problem));
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(code);
    }
    let m = &inspection.metadata;
    println!("{}", args.file.display());
    println!("  digest     {}", inspection.digest);
    println!("  size       {} bytes", inspection.size);
    println!(
        "  driver     {} ({}) version {}",
        m.name, m.generic_name, m.version
    );
    if !m.description.is_empty() {
        println!("             {}", m.description);
    }
    let port = m
        .default_port
        .map(|p| format!(", default port {p}"))
        .unwrap_or_default();
    println!(
        "  transport  {}{port}",
        json!(m.transport).as_str().unwrap_or("?")
    );
    println!(
        "  built with warden-driver-sdk {}, warden:driver@{}",
        m.sdk, m.wit
    );
    match &inspection.provenance {
        Some(provenance) => {
            println!(
                "  source     {} {} from {}",
                provenance.package,
                provenance.version,
                provenance
                    .repository
                    .as_deref()
                    .unwrap_or("(no repository declared)")
            );
            println!(
                "  commit     {}",
                provenance
                    .commit
                    .as_deref()
                    .unwrap_or("(none: not built by a builder that names the commit)")
            );
        }
        None => println!(
            "  source     (no provenance section: built with an SDK that did not embed it)"
        ),
    }
    if let Some(Some(problem)) = &mismatch {
        println!("  COMMIT MISMATCH: {problem}");
    }
    println!("  capabilities");
    for capability in inspection.capabilities() {
        println!("    {capability}");
    }
    println!("  imports");
    for import in &inspection.imports {
        let mark = if offer::is_offered(import) {
            ""
        } else {
            "   <- NOT OFFERED: the host refuses to load this component"
        };
        println!("    {import}{mark}");
    }
    println!("  exports");
    for export in &inspection.exports {
        println!("    {export}");
    }
    println!("  functions");
    for function in &m.functions {
        let params = function
            .param_names()
            .iter()
            .map(|name| {
                let schema = function
                    .params
                    .get("properties")
                    .and_then(|properties| properties.get(name));
                format!("{name}: {}", schema.map_or("any".to_string(), type_name))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let returns = type_name(&function.returns);
        println!(
            "    {}({params}) -> {returns}  [{}]",
            function.name,
            json!(function.level).as_str().unwrap_or("?")
        );
        if !function.description.is_empty() {
            println!("        {}", function.description);
        }
    }
    println!("  settings schema");
    println!("    {}", m.settings_schema);
    let secrets = m.secret_settings();
    if !secrets.is_empty() {
        println!("  secret settings (never shown back)");
        println!("    {}", secrets.join(", "));
    }
    println!("  default settings");
    println!("    {}", m.default_settings);
    Ok(code)
}

/// A short type name for a JSON Schema: `integer`, `string?` (optional), `"a"|"b"` (enum).
fn type_name(schema: &Value) -> String {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("|");
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        return match (ty, schema.get("items")) {
            ("array", Some(items)) => format!("[{}]", type_name(items)),
            _ => ty.to_string(),
        };
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        let non_null: Vec<String> = options
            .iter()
            .filter(|option| option.get("type").and_then(Value::as_str) != Some("null"))
            .map(type_name)
            .collect();
        let optional = non_null.len() < options.len();
        return format!("{}{}", non_null.join("|"), if optional { "?" } else { "" });
    }
    "any".to_string()
}

fn run(args: &RunArgs, cache_dir: PathBuf) -> anyhow::Result<ExitCode> {
    let settings: Value = serde_json::from_str(&args.settings).context("--settings is not JSON")?;
    if !settings.is_object() {
        bail!("--settings must be a JSON object");
    }
    let call_args: Value = serde_json::from_str(&args.args).context("--args is not JSON")?;
    if !matches!(call_args, Value::Array(_) | Value::Object(_)) {
        bail!("--args must be a JSON array or object");
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async move {
        let mut config = RuntimeConfig::new(cache_dir);
        config.limits.memory_bytes = args.memory_mib.saturating_mul(1 << 20);
        config.max_modules = 4;
        let runtime = Runtime::new(config).context("starting the runtime")?;
        let driver = runtime.load_driver_file(&args.file)?;
        let mut module_config = ModuleConfig::new("cli", driver.clone());
        if let Some(target) = args.endpoint.as_deref() {
            if driver.metadata().transport == TransportKind::Http {
                let base: BaseUri = target.parse().context("--endpoint")?;
                module_config.base_uri = Some(base);
            } else {
                let endpoint: Endpoint = target.parse().context("--endpoint")?;
                module_config.endpoint = Some(endpoint);
            }
        }
        module_config.settings = settings;
        module_config.connection = ConnectionOptions {
            make_break: args.make_break,
            ..ConnectionOptions::default()
        };
        let timeout = Duration::from_millis(args.timeout_ms);
        module_config.limits.exec_timeout = timeout;
        module_config.limits.memory_bytes = args.memory_mib.saturating_mul(1 << 20);
        module_config.limits.cpu_per_call = Duration::from_millis(args.cpu_ms_per_call);
        module_config.http.max_body = args.max_body_bytes;
        // Subscribe before the module starts, so its first log lines are shown too.
        let events = runtime.events();
        let module = runtime.start_module(module_config)?;
        let status = module.subscribe();
        for (key, value) in module.status_snapshot() {
            eprintln!("status {key} = {value}");
        }
        let printer = tokio::spawn(print_events(events, status));

        let connect_deadline = Instant::now() + Duration::from_millis(args.connect_timeout_ms);
        let ready = wait_ready(
            &module,
            connect_deadline,
            driver.metadata().transport.needs_endpoint() && !args.make_break,
        )
        .await;
        let code = match ready {
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::from(1)
            }
            Ok(()) if module.init_error().is_some() => {
                let refused = module
                    .init_error()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                eprintln!("error: the driver refused the settings: {refused}");
                ExitCode::from(2)
            }
            Ok(()) => {
                let options = ExecOptions {
                    timeout: Some(timeout),
                    ..ExecOptions::default()
                };
                match module.exec(&args.exec, call_args, options).await {
                    Ok(result) => {
                        println!("{result}");
                        ExitCode::SUCCESS
                    }
                    Err(error) => {
                        eprintln!("error: {} failed: {error}", args.exec);
                        ExitCode::from(1)
                    }
                }
            }
        };
        runtime.shutdown().await;
        // Let the last log lines and status changes reach stderr.
        tokio::time::sleep(Duration::from_millis(20)).await;
        printer.abort();
        Ok(code)
    })
}

/// Wait until the module runs and, when it has a persistent connection, is connected.
async fn wait_ready(
    module: &crate::runtime::ModuleHandle,
    deadline: Instant,
    needs_connection: bool,
) -> Result<(), String> {
    let mut state = module.watch_state();
    let mut status = module.subscribe();
    loop {
        let current = state.borrow_and_update().clone();
        match current {
            ModuleState::Running => {
                if !needs_connection || module.status("connected") == Some(Value::Bool(true)) {
                    return Ok(());
                }
            }
            ModuleState::Restarting { reason, .. } => {
                return Err(format!("the module crashed while starting: {reason}"));
            }
            ModuleState::Stopped => return Err("the module stopped".to_string()),
            ModuleState::Starting => {}
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return Err(if matches!(*state.borrow(), ModuleState::Running) {
                    "could not connect to the device before the connect timeout".to_string()
                } else {
                    "the module did not start before the connect timeout".to_string()
                });
            }
            _ = state.changed() => {}
            _ = status.recv() => {}
        }
    }
}

async fn print_events(
    mut events: tokio::sync::broadcast::Receiver<RuntimeEvent>,
    mut status: tokio::sync::broadcast::Receiver<crate::runtime::StatusChange>,
) {
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(RuntimeEvent::Log { level, message, .. }) => {
                    eprintln!("log {}: {message}", json!(level).as_str().unwrap_or("?"));
                }
                Ok(RuntimeEvent::Crashed { reason, restart_in_ms, .. }) => {
                    eprintln!("crashed: {reason} (restart in {restart_in_ms} ms)");
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("({n} events not shown)");
                }
                Err(_) => break,
            },
            change = status.recv() => match change {
                Ok(change) => eprintln!("status {} = {}", change.key, change.value),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::type_name;
    use serde_json::json;

    #[test]
    fn schema_type_names() {
        assert_eq!(type_name(&json!({"type": "integer"})), "integer");
        assert_eq!(
            type_name(&json!({"anyOf": [{"type": "boolean"}, {"type": "null"}]})),
            "boolean?"
        );
        assert_eq!(
            type_name(&json!({"type": "array", "items": {"type": "string"}})),
            "[string]"
        );
        assert_eq!(
            type_name(&json!({"type": "string", "enum": ["a", "b"]})),
            r#""a"|"b""#
        );
        assert_eq!(type_name(&json!({})), "any");
    }
}
