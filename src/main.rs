//! The `gatehouse` command.

use clap::{Parser, Subcommand};
use gatehouse::config::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("GATEHOUSE_COMMIT"), ")"),
    about = "An enterprise gateway for the Model Context Protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The YAML configuration file.
        #[arg(long, short, env = "GATEHOUSE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem found.
    Check {
        /// The YAML configuration file.
        #[arg(long, short, env = "GATEHOUSE_CONFIG")]
        config: PathBuf,
        /// Fail (exit 1) on warnings too, e.g. in a CI pipeline that reviews configurations.
        #[arg(long)]
        strict: bool,
    },
    /// The configuration file's format.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print a new random session-sealing key (base64, 32 bytes).
    SessionKey,
    /// GET a URL and succeed on a 2xx (a health check for images without curl).
    Probe {
        /// The URL, e.g. http://127.0.0.1:9464/healthz.
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Query the audit trail (newest first).
    Audit {
        /// The YAML configuration file (for the store).
        #[arg(long, short, env = "GATEHOUSE_CONFIG")]
        config: PathBuf,
        /// How far back: 15m, 1h, 7d, or `all`.
        #[arg(long, default_value = "24h")]
        since: String,
        /// Only this subject.
        #[arg(long)]
        subject: Option<String>,
        /// Only this tool, prompt or resource.
        #[arg(long)]
        tool: Option<String>,
        /// Only this outcome: ok, error, upstream_failure, timeout, refused, cancelled.
        #[arg(long)]
        outcome: Option<String>,
        /// Only this virtual server (by name).
        #[arg(long)]
        server: Option<String>,
        /// Only this tenant (tenancy.tenants).
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Work with the configured policies.
    Policy {
        /// The YAML configuration file.
        #[arg(long, short, env = "GATEHOUSE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Register upstreams and approve what clients get from them (the catalog).
    Catalog {
        /// The YAML configuration file (for the upstreams and the store).
        #[arg(long, short, env = "GATEHOUSE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: gatehouse::commands::catalog::CatalogAction,
    },
    /// OAuth clients registered dynamically with the oauth_server (list, revoke).
    Clients {
        /// The YAML configuration file (for the store).
        #[arg(long, short, env = "GATEHOUSE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: gatehouse::commands::clients::ClientsAction,
    },
    /// Manage API keys for headless agents (stored in the configured store).
    Keys {
        /// The YAML configuration file (for the store and the servers).
        #[arg(long, short, env = "GATEHOUSE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the JSON Schema of the configuration (the copy in docs/gatehouse.schema.json).
    Schema,
}

#[derive(Subcommand)]
enum PolicyAction {
    /// Explain whether a principal (given as token claims) may call a function, and by which rule.
    Explain {
        /// A JSON file with the token's claims (`-` for standard input).
        #[arg(long)]
        token_claims: PathBuf,
        /// The virtual server's path or name (default: the first).
        #[arg(long)]
        server: Option<String>,
        /// A tool name, as clients see it.
        #[arg(long, group = "target")]
        tool: Option<String>,
        /// A prompt name.
        #[arg(long, group = "target")]
        prompt: Option<String>,
        /// A resource URI.
        #[arg(long, group = "target")]
        resource: Option<String>,
        /// The upstream, when the name does not tell.
        #[arg(long)]
        upstream: Option<String>,
        /// The call's arguments as JSON, for argument rules.
        #[arg(long)]
        arguments: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key and print it once; only its digest is stored.
    Create {
        /// Who the key acts as (the principal's subject).
        #[arg(long)]
        subject: String,
        /// Granted scopes (repeat, or separate with commas or spaces).
        #[arg(long)]
        scopes: Vec<String>,
        /// Groups, for policy (repeat, or separate with commas).
        #[arg(long)]
        groups: Vec<String>,
        /// Virtual server path the key is limited to (repeat; default: any that accepts keys).
        #[arg(long = "server")]
        servers: Vec<String>,
        /// Lifetime such as 90d or 12h, or `never`.
        #[arg(long, default_value = "90d")]
        expires: String,
        /// Free text shown by `keys list`.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List keys (never their secrets).
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id; gateways stop accepting it within `auth.cache_max_ttl`.
    Revoke {
        /// The key's id (the part after `ghk_`, as `keys list` shows it).
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, strict } => match Config::load_with_warnings(&config) {
            Ok((_, warnings)) if strict && !warnings.is_empty() => {
                for w in &warnings {
                    eprintln!("warning: {}", w.render(&config));
                }
                eprintln!(
                    "{}: {} warning{} (--strict)",
                    config.display(),
                    warnings.len(),
                    if warnings.len() == 1 { "" } else { "s" }
                );
                ExitCode::from(1)
            }
            Ok((c, warnings)) => {
                for w in &warnings {
                    eprintln!("warning: {}", w.render(&config));
                }
                println!(
                    "{}: OK ({} virtual server{}, {} upstream{})",
                    config.display(),
                    c.servers.len(),
                    if c.servers.len() == 1 { "" } else { "s" },
                    c.upstreams.len(),
                    if c.upstreams.len() == 1 { "" } else { "s" },
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::SessionKey => {
            use base64::Engine;
            use rand::RngCore;
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        Command::Config {
            action: ConfigAction::Schema,
        } => {
            print!("{}", gatehouse::config::schema::json_schema_text());
            ExitCode::SUCCESS
        }
        Command::Probe { url, timeout } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let timeout = std::time::Duration::from_secs(timeout.max(1));
            match rt.block_on(gatehouse::commands::probe::probe(&url, timeout)) {
                Ok(status) => {
                    println!("{url}: {status}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gatehouse probe: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Audit {
            config: path,
            since,
            subject,
            tool,
            outcome,
            server,
            tenant,
            limit,
            json,
        } => {
            let q = gatehouse::commands::audit::AuditQuery {
                since,
                subject,
                tool,
                outcome,
                server,
                tenant,
                limit,
            };
            with_store("audit", &path, move |_, store| {
                Box::pin(async move { gatehouse::commands::audit::query(store, &q, json).await })
            })
        }
        Command::Policy {
            config,
            action:
                PolicyAction::Explain {
                    token_claims,
                    server,
                    tool,
                    prompt,
                    resource,
                    upstream,
                    arguments,
                },
        } => {
            match explain(
                config,
                token_claims,
                server,
                tool,
                prompt,
                resource,
                upstream,
                arguments,
            ) {
                Ok(e) => {
                    print!("{}", e.text);
                    if e.allowed {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("gatehouse policy explain: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Keys { config, action } => {
            let Some(path) = config else {
                eprintln!("gatehouse keys: --config FILE (or GATEHOUSE_CONFIG) is required");
                return ExitCode::from(2);
            };
            with_store("keys", &path, |config, store| {
                Box::pin(keys(config, store, action))
            })
        }
        Command::Clients { config, action } => {
            let Some(path) = config else {
                eprintln!("gatehouse clients: --config FILE (or GATEHOUSE_CONFIG) is required");
                return ExitCode::from(2);
            };
            with_store("clients", &path, |_, store| {
                Box::pin(gatehouse::commands::clients::run(store, action))
            })
        }
        Command::Catalog { config, action } => {
            let Some(path) = config else {
                eprintln!("gatehouse catalog: --config FILE (or GATEHOUSE_CONFIG) is required");
                return ExitCode::from(2);
            };
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            with_store("catalog", &path, move |config, store| {
                Box::pin(async move {
                    gatehouse::commands::catalog::run(config, &dir, store, action).await
                })
            })
        }
        Command::Serve { config: path } => {
            let (config, warnings) = match Config::load_with_warnings(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let telemetry = gatehouse::telemetry::init(&config.log, &config.traces);
            for w in &warnings {
                tracing::warn!(field = %w.field, line = w.line, "configuration: {}", w.message);
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let result = rt.block_on(gatehouse::serve::run(config, path));
            drop(rt);
            telemetry.shutdown();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("gatehouse: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn keys(
    config: &Config,
    store: &gatehouse::store::Store,
    action: KeysAction,
) -> Result<String, String> {
    use gatehouse::commands::keys;
    let out = match action {
        KeysAction::Create {
            subject,
            scopes,
            groups,
            servers,
            expires,
            description,
        } => {
            let req = keys::CreateKey {
                subject,
                scopes: keys::split_list(&scopes),
                groups: keys::split_list(&groups),
                servers: keys::split_list(&servers),
                expires,
                description,
            };
            let key = keys::create(config, store, &req).await?;
            eprintln!(
                "Store this key now; it cannot be shown again. Send it as `Authorization: Bearer <key>`."
            );
            format!("{key}\n")
        }
        KeysAction::List { json } => keys::list(store, json).await?,
        KeysAction::Revoke { id } => {
            keys::revoke(store, id.trim_start_matches("ghk_")).await?;
            format!("revoked {id}\n")
        }
    };
    Ok(out)
}

/// A command's work on the store: what to print, or why it failed.
type StoreFuture<'a> = std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + 'a>>;

/// Loads the configuration, opens its store, runs `job` and prints what it returns (exit 2 for
/// a configuration error, 1 for a failure).
fn with_store(
    name: &str,
    path: &std::path::Path,
    job: impl for<'a> FnOnce(&'a Config, &'a gatehouse::store::Store) -> StoreFuture<'a> + 'static,
) -> ExitCode {
    let config = match Config::load_for_admin(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Multi-threaded: the catalog's upstream clients may block in place.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        let store = gatehouse::serve::open_store(&config, path)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let out = job(&config, &store).await;
        store.close().await;
        out
    });
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gatehouse {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn explain(
    config: Option<PathBuf>,
    claims: PathBuf,
    server: Option<String>,
    tool: Option<String>,
    prompt: Option<String>,
    resource: Option<String>,
    upstream: Option<String>,
    arguments: Option<String>,
) -> Result<gatehouse::commands::policy::Explanation, String> {
    use gatehouse::policy::FunctionKind;
    let path = config.ok_or("--config FILE (or GATEHOUSE_CONFIG) is required")?;
    let config = Config::load_for_admin(&path).map_err(|e| e.to_string())?;
    let text = if claims.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| e.to_string())?
    } else {
        std::fs::read_to_string(&claims).map_err(|e| format!("{}: {e}", claims.display()))?
    };
    let claims: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("--token-claims: not JSON: {e}"))?;
    if !claims.is_object() {
        return Err("--token-claims: expected a JSON object of claims".into());
    }
    let (kind, name) = match (tool, prompt, resource) {
        (Some(t), None, None) => (FunctionKind::Tool, t),
        (None, Some(p), None) => (FunctionKind::Prompt, p),
        (None, None, Some(r)) => (FunctionKind::Resource, r),
        _ => return Err("name what to explain with one of --tool, --prompt or --resource".into()),
    };
    let arguments = arguments
        .map(|a| serde_json::from_str(&a).map_err(|e| format!("--arguments: not JSON: {e}")))
        .transpose()?;
    let req = gatehouse::commands::policy::ExplainRequest {
        server,
        claims,
        kind,
        name,
        upstream,
        arguments,
    };
    gatehouse::commands::policy::explain(&config, &req)
}
