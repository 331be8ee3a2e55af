//! The files in deploy/ agree with the binary they run. There is no Docker engine or
//! cluster here, so each file is parsed and every way it starts `n8n-relay` is checked
//! against the real binary: the environment names are real configuration keys (loaded
//! by `check-config`, which refuses unknown keys), the command lines parse, and the
//! ports that probes, healthchecks, published ports and Services use are the ports the
//! relay actually listens on with that environment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use relay_core::config::{redact_url_password, SEED_ENV_KEYS};
use serde::Deserialize;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of a YAML file, merge keys (`<<: *anchor`) applied.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value = serde_yaml_ng::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{rel}: not YAML: {e}"));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{rel}: merge keys: {e}"));
            serde_json::to_value(value).unwrap_or_else(|e| panic!("{rel}: {e}"))
        })
        .collect()
}

fn str_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("a list of strings").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

/// One way a deploy file starts the relay: the arguments after the binary and the
/// environment it gets.
#[derive(Debug, Clone)]
struct Invocation {
    origin: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

/// What the relay ends up with for an invocation.
struct Effective {
    callbacks_port: u16,
    metrics_port: u16,
    callbacks_listen: String,
    metrics_listen: String,
}

/// The config key an environment name sets, if it sets one.
fn key_for(var: &str) -> Option<String> {
    if let Some((_, key)) = SEED_ENV_KEYS.iter().find(|(name, _)| *name == var) {
        return Some((*key).to_string());
    }
    var.strip_prefix("RELAY_")
        .map(|rest| rest.to_ascii_lowercase().replace("__", "."))
}

/// Environment names the relay reads that are not configuration keys.
const OTHER_RELAY_ENV: &[&str] = &["RUST_LOG"];

/// A value a placeholder stands for, so `check-config` can validate the rest.
fn concrete(var: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .unwrap_or_else(|| panic!("{var}: unclosed ${{ in {value:?}"));
        // `${NAME:-default}` is its default when the name is not set; `${NAME}` a
        // placeholder.
        let inner = &rest[start + 2..start + end];
        match inner.split_once(":-") {
            Some((_, default)) => out.push_str(default),
            None => out.push_str("placeholder"),
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    if var.ends_with("_FILE") {
        // A secret mounted as a file (a Kubernetes Secret volume, a systemd
        // credential): a private file of that name stands in for it.
        let dir = std::env::temp_dir().join(format!("deploy-files-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("secrets dir");
        let path = dir.join(var);
        // Written aside and renamed into place: the tests run side by side and write the
        // same names, and a file truncated by one was read empty by another.
        let aside = dir.join(format!("{var}.{:?}", std::thread::current().id()));
        std::fs::write(&aside, "placeholder-secret").expect("secret file");
        std::fs::set_permissions(&aside, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod 600");
        std::fs::rename(&aside, &path).expect("secret file in place");
        return path.to_string_lossy().to_string();
    }
    if out.is_empty() {
        // Secrets left empty in examples, or values that come from a Secret.
        return match var {
            "DATABASE_URL" => "postgres://u:p@db:5432/leads".into(),
            _ => "placeholder-secret".into(),
        };
    }
    out
}

fn relay(args: &[String], env: &BTreeMap<String, String>) -> std::process::Output {
    let scratch = std::env::temp_dir().join(format!("deploy-files-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    Command::new(relay_tests::relay::binary())
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(&scratch)
        .output()
        .expect("run n8n-relay")
}

/// Runs the real binary on an invocation: its environment must load as a valid
/// configuration with every variable landing on a key, and its command line must parse.
fn check(inv: &Invocation) -> Effective {
    for var in inv.env.keys() {
        assert!(
            key_for(var).is_some() || OTHER_RELAY_ENV.contains(&var.as_str()),
            "{}: {var} is not a configuration key of n8n-relay",
            inv.origin
        );
    }
    let mut env: BTreeMap<String, String> = inv
        .env
        .iter()
        .map(|(k, v)| (k.clone(), concrete(k, v)))
        .collect();
    // check-config refuses what `run` refuses, the callback listener without its
    // secret and delivering without a signing secret among it; a `migrate` starts no
    // listener and delivers nothing.
    if !matches!(
        inv.args.first().map(String::as_str),
        Some("run" | "callbacks")
    ) {
        env.insert("RELAY_CALLBACKS__ENABLED".into(), "false".into());
    }
    if inv.args.first().map(String::as_str) != Some("run") {
        env.insert("N8N_ENABLED".into(), "false".into());
    }
    // The files all ship config/relay.toml (the image copies it, the unit points at it).
    let config = repo().join("config/relay.toml");
    let config = config.to_string_lossy().to_string();
    let out = relay(
        &[
            "--config".into(),
            config,
            "check-config".into(),
            "--json".into(),
        ],
        &env,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: check-config refused the environment {env:?}\n{}",
        inv.origin,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("check-config --json");
    for var in inv.env.keys() {
        let Some(key) = key_for(var) else { continue };
        let source = report["keys"][&key]["source"].as_str().unwrap_or_default();
        assert!(
            source.contains("environment"),
            "{}: {var} should set {key}, but check-config says it came from {source:?}",
            inv.origin
        );
    }

    let mut help = inv.args.clone();
    help.push("--help".into());
    let out = relay(&help, &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: `n8n-relay {}` does not parse\n{}",
        inv.origin,
        inv.args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let subcommand = inv
        .args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with('-') && (*i == 0 || inv.args[i - 1] != "--config"));
    assert!(
        subcommand.is_some(),
        "{}: no subcommand in {:?}",
        inv.origin,
        inv.args
    );

    let callbacks_listen = report["config"]["callbacks"]["listen"]
        .as_str()
        .expect("callbacks.listen")
        .to_string();
    let metrics_listen = report["config"]["metrics"]["listen"]
        .as_str()
        .expect("metrics.listen")
        .to_string();
    Effective {
        callbacks_port: port_of(&callbacks_listen),
        metrics_port: port_of(&metrics_listen),
        callbacks_listen,
        metrics_listen,
    }
}

/// The final stage of deploy/Dockerfile.
struct Image {
    env: BTreeMap<String, String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    expose: BTreeSet<u16>,
    healthcheck: String,
    user: String,
    builder: String,
}

/// Dockerfile instructions with line continuations joined and comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read("deploy/Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (op, rest) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((op.to_ascii_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    out
}

fn image() -> Image {
    let mut image = Image {
        env: BTreeMap::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        expose: BTreeSet::new(),
        healthcheck: String::new(),
        user: String::new(),
        builder: String::new(),
    };
    for (op, rest) in dockerfile_instructions() {
        match op.as_str() {
            "FROM" => {
                if image.builder.is_empty() {
                    image.builder = rest.clone();
                }
                // A new stage: only the last one is the image.
                image.env.clear();
                image.expose.clear();
            }
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("Dockerfile: ENV {pair:?} is not KEY=VALUE"));
                    image.env.insert(k.into(), v.into());
                }
            }
            "ENTRYPOINT" => image.entrypoint = serde_json::from_str(&rest).expect("exec form"),
            "CMD" => image.cmd = serde_json::from_str(&rest).expect("exec form"),
            "EXPOSE" => image.expose = rest.split_whitespace().map(port_of_expose).collect(),
            "HEALTHCHECK" => image.healthcheck = rest,
            "USER" => image.user = rest,
            "COPY" if !rest.starts_with("--from") => {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                for source in &parts[..parts.len() - 1] {
                    assert!(
                        repo().join(source).exists(),
                        "Dockerfile copies {source}, which is not in the repository"
                    );
                }
            }
            _ => {}
        }
    }
    image
}

fn port_of_expose(text: &str) -> u16 {
    text.trim_end_matches("/tcp")
        .parse()
        .unwrap_or_else(|_| panic!("EXPOSE {text}"))
}

fn version_tuple(text: &str) -> Vec<u32> {
    text.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

#[test]
fn the_image_runs_the_relay_unprivileged_reachable_and_health_checked() {
    let image = image();
    assert_eq!(image.entrypoint, ["/usr/local/bin/n8n-relay"]);
    assert!(
        !image.user.is_empty() && !image.user.starts_with("0") && image.user != "root",
        "the image must not run as root (USER {:?})",
        image.user
    );
    // The signing secrets come with `docker run -e` (deploy/README), not the image.
    let mut env = image.env.clone();
    env.insert("WEBHOOK_SECRET".into(), String::new());
    env.insert("N8N_WEBHOOK_SECRET".into(), String::new());
    let effective = check(&Invocation {
        origin: "deploy/Dockerfile".into(),
        args: image.cmd.clone(),
        env,
    });
    for listen in [&effective.callbacks_listen, &effective.metrics_listen] {
        assert!(
            listen.starts_with("0.0.0.0:") || listen.starts_with("[::]:"),
            "in a container {listen} must not be loopback, or nothing outside can reach it"
        );
    }
    assert_eq!(
        image.expose,
        BTreeSet::from([effective.callbacks_port, effective.metrics_port])
    );
    assert!(
        image
            .healthcheck
            .contains(&format!("127.0.0.1/{}", effective.metrics_port))
            && image.healthcheck.contains("/healthz"),
        "HEALTHCHECK must ask /healthz on the metrics port {}: {}",
        effective.metrics_port,
        image.healthcheck
    );

    // The builder's Rust is at least the workspace's rust-version.
    let manifest = read("Cargo.toml");
    let wanted = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version in Cargo.toml")
        .trim_matches('"');
    let tag = image
        .builder
        .split_whitespace()
        .next()
        .and_then(|i| i.strip_prefix("rust:"))
        .expect("the builder is a rust: image");
    let have = tag.split('-').next().unwrap_or_default();
    assert!(
        version_tuple(have) >= version_tuple(wanted),
        "builder rust:{have} is older than rust-version {wanted}"
    );
}

/// The older system's settings a migrating user keeps in deploy/.env reach the relay
/// (compose passed none of them: `N8N_ENABLED=false` there did not pause delivery),
/// and where `.env` leaves one out compose gives the relay's own default.
#[test]
fn compose_passes_the_older_settings_from_env_with_the_relays_own_defaults() {
    let doc = yaml_docs("deploy/compose.yaml").remove(0);
    let env = compose_env(&doc["services"]["relay"]);
    let config = repo()
        .join("config/relay.toml")
        .to_string_lossy()
        .to_string();
    let args = [
        "--config".to_string(),
        config,
        "check-config".into(),
        "--json".into(),
    ];
    let base: BTreeMap<String, String> = [
        ("DATABASE_URL", "postgres://u:p@db:5432/leads"),
        ("WEBHOOK_SECRET", "placeholder-secret"),
        ("N8N_WEBHOOK_SECRET", "placeholder-secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let report = |env: &BTreeMap<String, String>| -> Value {
        let out = relay(&args, env);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("check-config --json")
    };
    let defaults = report(&base);
    for name in [
        "N8N_ENABLED",
        "WEBHOOK_QUEUE_ENABLED",
        "WEBHOOK_MAX_RETRIES",
        "WEBHOOK_RETRY_DELAYS",
        "WEBHOOK_TIMEOUT_SECONDS",
        "WEBHOOK_QUEUE_BATCH_SIZE",
        "WEBHOOK_QUEUE_PROCESSING_INTERVAL",
    ] {
        let value = env
            .get(name)
            .unwrap_or_else(|| panic!("compose's relay service does not pass {name} on"));
        let default = value
            .strip_prefix(&format!("${{{name}:-"))
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{name}: {value:?} is not ${{{name}:-default}}"));
        let key = key_for(name).expect("a configuration key");
        let mut with = base.clone();
        with.insert(name.to_string(), default.to_string());
        assert_eq!(
            report(&with)["keys"][&key]["value"],
            defaults["keys"][&key]["value"],
            "{name}: compose's default {default:?} is not the relay's"
        );
    }
}

/// `environment:` in compose, as a map or a list of KEY=VALUE.
fn compose_env(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str())
            .map(|i| {
                let (k, v) = i.split_once('=').unwrap_or((i, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn is_relay_image(image: &str) -> bool {
    image.starts_with("n8n-relay:")
        || image.ends_with("/n8n-relay")
        || image.contains("/n8n-relay:")
}

#[test]
fn compose_wires_postgres_n8n_migrate_and_the_relay_with_matching_ports() {
    let image = image();
    let doc = yaml_docs("deploy/compose.yaml").remove(0);
    let services = doc["services"].as_object().expect("services");
    let mut relay_services = 0;
    for (name, service) in services {
        let image_name = service["image"].as_str().unwrap_or_default();
        if !is_relay_image(image_name) {
            continue;
        }
        relay_services += 1;
        assert_eq!(
            service["build"]["dockerfile"], "deploy/Dockerfile",
            "{name} builds the image"
        );
        assert_compose_secrets_are_files(name, service, &doc);
        let mut env = image.env.clone();
        env.extend(compose_env(service));
        let args = str_list(&service["command"]);
        let effective = check(&Invocation {
            origin: format!("deploy/compose.yaml service {name}"),
            args: args.clone(),
            env,
        });
        if args.first().map(String::as_str) == Some("run") {
            let published: BTreeSet<u16> = str_list(&service["ports"])
                .iter()
                .map(|p| port_of(p))
                .collect();
            assert_eq!(
                published,
                BTreeSet::from([effective.callbacks_port, effective.metrics_port]),
                "{name}: published container ports"
            );
            let test = str_list(&service["healthcheck"]["test"]).join(" ");
            assert!(
                test.contains(&format!("127.0.0.1/{}", effective.metrics_port))
                    && test.contains("/healthz"),
                "{name}: healthcheck must ask /healthz on {}: {test}",
                effective.metrics_port
            );
            let deps = &service["depends_on"];
            assert_eq!(
                deps["migrate"]["condition"],
                "service_completed_successfully"
            );
            assert_eq!(deps["postgres"]["condition"], "service_healthy");
            // Docker kills at stop_grace_period (10 s unless set): the relay needs
            // queue.shutdown_grace_seconds (10 s) and then the release of the rest.
            let grace = service["stop_grace_period"].as_str().unwrap_or("10s");
            let grace: u64 = grace
                .strip_suffix('s')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name}: stop_grace_period in seconds: {grace}"));
            assert!(
                grace >= 20,
                "{name}: stop_grace_period {grace} s leaves no room after the relay's 10 s drain"
            );
            // Healthy means reachable the way migrate and the relay connect: over TCP.
            let ready = str_list(&services["postgres"]["healthcheck"]["test"]).join(" ");
            assert!(
                ready.contains("pg_isready") && ready.contains("-h 127.0.0.1"),
                "postgres healthcheck over TCP, not the init server's Unix socket: {ready}"
            );
            // n8n's callbacks must reach this service on its callbacks port.
            let n8n_env = compose_env(&services["n8n"]);
            assert_eq!(
                n8n_env["N8N_RELAY_CALLBACK_BASE_URL"],
                format!("http://{name}:{}", effective.callbacks_port)
            );
            let n8n_port = &n8n_env["N8N_PORT"];
            let base = &compose_env(service)["N8N_WEBHOOK_BASE_URL"];
            assert_eq!(base, &format!("http://n8n:{n8n_port}"));
        } else {
            assert_eq!(args, ["migrate", "--example-tables"], "{name}");
            assert_eq!(service["restart"], "no", "{name} is one-shot");
            assert_eq!(service["healthcheck"]["disable"], true, "{name}");
        }
    }
    assert_eq!(relay_services, 2, "a migrate service and the relay");
    assert_eq!(services["n8n"]["image"], "n8nio/n8n:1.123.81");
    for mount in str_list(&services["postgres"]["volumes"]) {
        if let Some(local) = mount.strip_prefix("./") {
            let local = local.split(':').next().unwrap_or_default();
            assert!(
                repo().join("deploy").join(local).exists(),
                "compose mounts deploy/{local}, which is missing"
            );
        }
    }
}

/// A relay service of compose.yaml takes no secret from its environment: its
/// `_FILE` variables name compose secrets mounted at /run/secrets/NAME, each a file
/// under deploy/secrets/ that compose-secrets.sh writes.
fn assert_compose_secrets_are_files(name: &str, service: &Value, doc: &Value) {
    let script = read("deploy/compose-secrets.sh");
    let env = compose_env(service);
    for (var, value) in &env {
        assert!(
            !["WEBHOOK_SECRET", "N8N_WEBHOOK_SECRET", "N8N_API_KEY"].contains(&var.as_str()),
            "compose service {name}: {var} is an environment value"
        );
        if var == "DATABASE_URL" {
            assert!(
                !carries_password(value),
                "compose service {name}: DATABASE_URL carries a password: {value}"
            );
        }
        let Some(secret) = value.strip_prefix("/run/secrets/") else {
            assert!(
                !var.ends_with("_FILE"),
                "compose service {name}: {var} = {value}"
            );
            continue;
        };
        assert!(
            str_list(&service["secrets"]).iter().any(|s| s == secret),
            "compose service {name}: {var} names secret {secret}, which it does not mount"
        );
        let file = doc["secrets"][secret]["file"].as_str().unwrap_or_default();
        assert_eq!(
            file,
            format!("./secrets/{secret}"),
            "compose secret {secret}"
        );
        assert!(
            script.contains(&format!("secrets/{secret}")),
            "compose-secrets.sh does not write secrets/{secret}"
        );
    }
    assert!(
        script.contains("chown 10001:10001") && script.contains("chmod 0600"),
        "compose-secrets.sh makes the files the relay's own"
    );
}

/// Resolves a probe or Service port (a number or a container port name).
fn container_port(container: &Value, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).expect("port");
    }
    let name = port.as_str().expect("a port number or name");
    container["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == name))
        .and_then(|p| p["containerPort"].as_u64())
        .map(|n| u16::try_from(n).expect("port"))
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

#[test]
fn kubernetes_probes_services_and_secrets_match_the_relay() {
    let image = image();
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for path in &files {
        let rel = path
            .strip_prefix(repo())
            .expect("in repo")
            .to_string_lossy()
            .to_string();
        docs.extend(yaml_docs(&rel).into_iter().map(|d| (rel.clone(), d)));
    }
    let kind = |d: &Value| d["kind"].as_str().unwrap_or_default().to_string();
    let secret = docs
        .iter()
        .find(|(_, d)| kind(d) == "Secret")
        .map(|(_, d)| d.clone())
        .expect("secret.example.yaml");
    let kustomization = docs
        .iter()
        .find(|(_, d)| kind(d) == "Kustomization")
        .map(|(_, d)| d.clone())
        .expect("kustomization.yaml");
    for resource in str_list(&kustomization["resources"]) {
        assert!(
            repo().join("deploy/kubernetes").join(&resource).is_file(),
            "kustomization lists {resource}, which is missing"
        );
    }

    let mut sidecar_ports = None;
    let mut pod_labels = Value::Null;
    let mut relay_containers = 0;
    for (file, doc) in &docs {
        let pod = &doc["spec"]["template"];
        let Some(containers) = pod["spec"]["containers"].as_array() else {
            continue;
        };
        for c in containers {
            if !is_relay_image(c["image"].as_str().unwrap_or_default()) {
                continue;
            }
            relay_containers += 1;
            let origin = format!("{file} container {}", c["name"]);
            assert!(
                c["command"].is_null(),
                "{origin}: keep the image's entrypoint"
            );
            let mut env = image.env.clone();
            for var in c["env"].as_array().cloned().unwrap_or_default() {
                let name = var["name"].as_str().expect("env name").to_string();
                let value = match &var["valueFrom"]["secretKeyRef"] {
                    Value::Object(r) => {
                        let key = r["key"].as_str().expect("secret key");
                        assert_eq!(r["name"], secret["metadata"]["name"], "{origin}: {name}");
                        assert!(
                            secret["stringData"][key].is_string(),
                            "{origin}: {name} reads key {key}, which the Secret does not have"
                        );
                        String::new()
                    }
                    _ => var["value"].as_str().unwrap_or_default().to_string(),
                };
                env.insert(name, value);
            }
            assert_secrets_are_mounted_files(&origin, c, &pod["spec"], &secret);
            let args = str_list(&c["args"]);
            let effective = check(&Invocation {
                origin: origin.clone(),
                args: args.clone(),
                env,
            });
            if args.first().map(String::as_str) != Some("run") {
                assert_eq!(
                    kind(doc),
                    "Job",
                    "{origin}: only the Job runs something else"
                );
                continue;
            }
            assert_eq!(
                container_port(c, &Value::from("callbacks")),
                effective.callbacks_port,
                "{origin}"
            );
            assert_eq!(
                container_port(c, &Value::from("metrics")),
                effective.metrics_port,
                "{origin}"
            );
            for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                let get = &c[probe]["httpGet"];
                assert_eq!(get["path"], path, "{origin}: {probe}");
                assert_eq!(
                    container_port(c, &get["port"]),
                    effective.metrics_port,
                    "{origin}: {probe} port"
                );
            }
            sidecar_ports = Some((c.clone(), effective.callbacks_port));
            pod_labels = pod["metadata"]["labels"].clone();
            // The sidecar reaches Postgres in its own pod.
            let url = c["env"]
                .as_array()
                .and_then(|env| env.iter().find(|v| v["name"] == "DATABASE_URL"))
                .and_then(|v| v["value"].as_str())
                .unwrap_or_default();
            assert!(
                url.contains("@127.0.0.1:5432/"),
                "the sidecar's DATABASE_URL points at the pod's own Postgres: {url}"
            );
            let postgres = containers
                .iter()
                .find(|other| {
                    other["image"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("postgres:")
                })
                .unwrap_or_else(|| {
                    panic!("{origin}: the relay runs as a sidecar next to Postgres")
                });
            // Both containers are stopped at once: Postgres must outlive the relay's
            // stop (the grace + 15 s), or the relay's last writes are cut.
            let prestop = postgres["lifecycle"]["preStop"]["exec"]["command"].to_string();
            assert!(
                prestop.contains("pg_stat_activity") && prestop.contains("n8n_relay"),
                "{origin}: Postgres waits for the relay's sessions before it stops: {prestop}"
            );
            let grace = pod["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30);
            assert!(
                grace >= 10 + 15 + 20,
                "{origin}: {grace} s for the relay's stop (10 + 15 s) and then Postgres's own"
            );
        }
    }
    assert_eq!(relay_containers, 2, "the sidecar and the migrate Job");
    let (container, callbacks_port) = sidecar_ports.expect("a relay running `run`");

    // The relay beside Postgres is not ready before the migrate Job ran, and the Job
    // reaches Postgres through this Service's name: it must resolve while the pod is
    // not Ready, or the first install waits on itself.
    let postgres = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| kind(d) == "Service" && d["metadata"]["name"] == "postgres")
        .expect("Service postgres");
    assert_eq!(postgres["spec"]["publishNotReadyAddresses"], true);

    let service = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| kind(d) == "Service" && d["metadata"]["name"] == "n8n-relay")
        .expect("Service n8n-relay");
    for (k, v) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod_labels[k], v, "the Service selects the relay's pod");
    }
    let callbacks = service["spec"]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["port"] == 8000))
        .expect("the Service exposes callbacks on 8000");
    assert_eq!(
        container_port(&container, &callbacks["targetPort"]),
        callbacks_port
    );
}

/// No secret in a relay container's environment: the database URL carries no
/// password, and every `_FILE` variable names a file of a Secret volume mounted in
/// the container, whose item comes from a key the Secret has.
fn assert_secrets_are_mounted_files(origin: &str, c: &Value, pod: &Value, secret: &Value) {
    let env = c["env"].as_array().cloned().unwrap_or_default();
    for var in &env {
        let name = var["name"].as_str().unwrap_or_default();
        assert!(
            var["valueFrom"]["secretKeyRef"].is_null(),
            "{origin}: {name} comes from the Secret as an environment value"
        );
        let value = var["value"].as_str().unwrap_or_default();
        if name == "DATABASE_URL" {
            assert!(
                !carries_password(value),
                "{origin}: DATABASE_URL carries a password: {value}"
            );
        }
        if !name.ends_with("_FILE") {
            continue;
        }
        let (dir, file) = value.rsplit_once('/').expect("a path");
        let mount = c["volumeMounts"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["mountPath"] == dir))
            .unwrap_or_else(|| panic!("{origin}: {name} = {value}: nothing is mounted at {dir}"));
        let volume = pod["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
            .unwrap_or_else(|| panic!("{origin}: no volume {}", mount["name"]));
        assert_eq!(
            volume["secret"]["secretName"], secret["metadata"]["name"],
            "{origin}"
        );
        let item = volume["secret"]["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["path"] == file))
            .unwrap_or_else(|| panic!("{origin}: {name}: the volume has no item {file}"));
        let key = item["key"].as_str().unwrap_or_default();
        assert!(
            secret["stringData"][key].is_string(),
            "{origin}: {name} reads key {key}, which the Secret does not have"
        );
        // 0440: YAML 1.1 (Kubernetes) reads it as octal, a YAML 1.2 parser as text.
        let mode = &volume["secret"]["defaultMode"];
        assert!(
            mode == 0o440 || mode == "0440",
            "{origin}: {name}: mode {mode}"
        );
        // The pod's fsGroup owns the volume's files and is a supplementary group of
        // every container, so the relay reads them; nobody else can.
        assert!(
            pod["securityContext"]["fsGroup"].is_u64(),
            "{origin}: without an fsGroup the relay cannot read a 0440 Secret volume"
        );
    }
}

/// KEY=VALUE lines of an env file; commented-out `#KEY=VALUE` lines too (they
/// document optional keys, which must be real as well).
fn env_file(rel: &str) -> BTreeMap<String, String> {
    read(rel)
        .lines()
        .map(|l| l.trim().trim_start_matches('#').trim())
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let is_name = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            is_name.then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn the_systemd_unit_runs_real_commands_with_a_real_environment_file() {
    let unit = read("deploy/n8n-relay.service");
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.trim().trim_start_matches('#').strip_prefix(key))
            .filter_map(|l| l.strip_prefix('='))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(value("EnvironmentFile"), ["/etc/n8n-relay/env"]);
    assert_eq!(value("Restart"), ["on-failure"]);
    assert_eq!(value("User"), ["n8n-relay"]);
    for key in ["NoNewPrivileges", "ProtectHome", "PrivateTmp"] {
        assert_eq!(value(key), ["yes"], "{key}");
    }
    assert_eq!(value("ProtectSystem"), ["strict"]);
    let mut env = env_file("deploy/env.example");
    // Secrets handed over as systemd credentials: each `X_FILE=%d/NAME` names a
    // credential the unit loads, and replaces X (commented out in env.example).
    let credentials: Vec<String> = value("LoadCredential")
        .iter()
        .filter_map(|c| c.split_once(':').map(|(name, _)| name.to_string()))
        .collect();
    // systemd will not start the unit while a credential's file is missing: the
    // install steps create every one.
    let install = read("deploy/README.md");
    for credential in value("LoadCredential") {
        let (_, source) = credential
            .split_once(':')
            .expect("LoadCredential=NAME:PATH");
        assert!(
            install.contains(&format!("> {source})")),
            "deploy/README.md's systemd steps never create {source}"
        );
    }
    let mut from_files = 0;
    for assignment in value("Environment") {
        let (var, path) = assignment.split_once('=').expect("Environment=VAR=VALUE");
        if let Some(name) = path.strip_prefix("%d/") {
            assert!(
                credentials.iter().any(|c| c == name),
                "{var} reads credential {name}, which no LoadCredential= loads"
            );
            env.remove(var.trim_end_matches("_FILE"));
            from_files += 1;
        }
        env.insert(var.to_string(), path.to_string());
    }
    assert_eq!(
        from_files, 3,
        "both signing secrets and the database password come from credentials"
    );
    let url = env.get("DATABASE_URL").cloned().unwrap_or_default();
    assert!(
        !carries_password(&url),
        "the environment file's DATABASE_URL carries a password: {url}"
    );
    let mut commands = value("ExecStart");
    commands.extend(value("ExecStartPre"));
    assert!(
        commands.len() >= 2,
        "ExecStart and the optional ExecStartPre"
    );
    for line in commands {
        let mut words = line.split_whitespace().map(str::to_string);
        assert_eq!(words.next().as_deref(), Some("/usr/local/bin/n8n-relay"));
        let args: Vec<String> = words.collect();
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--config" && w[1] == "/etc/n8n-relay/relay.toml"),
            "{line}"
        );
        let effective = check(&Invocation {
            origin: format!("deploy/n8n-relay.service: {line}"),
            args,
            env: env.clone(),
        });
        // On a host the listeners stay on loopback unless the operator opens them.
        assert_eq!(effective.callbacks_port, 8000);
        assert_eq!(effective.metrics_port, 9187);
    }
}

/// A database URL with a password in any of libpq's places (userinfo, `?password=`,
/// `password=` in key=value form): the relay's own redaction would hide something.
fn carries_password(url: &str) -> bool {
    redact_url_password(url) != url.trim()
}

/// `n8n-relay ...` command lines in the shell blocks of the documents.
fn documented_command_lines(rel: &str) -> Vec<Vec<String>> {
    let text = read(rel);
    let mut lines = Vec::new();
    let mut in_shell = false;
    let mut joined = String::new();
    for line in text.lines() {
        let fence = line.trim_start();
        if fence.starts_with("```") {
            in_shell = !in_shell && fence.trim_start_matches('`').starts_with("sh");
            continue;
        }
        if !in_shell {
            continue;
        }
        if let Some(part) = line.strip_suffix('\\') {
            joined.push_str(part);
            continue;
        }
        joined.push_str(line);
        let full = std::mem::take(&mut joined);
        let code = full.split(" #").next().unwrap_or_default();
        for segment in code.split(['|', ';', '&']) {
            let words: Vec<&str> = segment.split_whitespace().collect();
            // Skip `VAR=value` prefixes and `docker compose exec SERVICE`.
            let mut i = words.iter().take_while(|w| w.contains('=')).count();
            if words[i..].starts_with(&["docker", "compose", "exec"]) {
                i += 4;
            }
            let at_command = words
                .get(i)
                .is_some_and(|w| *w == "n8n-relay" || w.ends_with("/n8n-relay"));
            // `docker run ... n8n-relay:TAG ARGS`
            let image = words.iter().position(|w| w.starts_with("n8n-relay:"));
            let args_from = if at_command {
                Some(i + 1)
            } else if words.starts_with(&["docker", "run"]) {
                image.map(|p| p + 1)
            } else {
                None
            };
            if let Some(from) = args_from {
                lines.push(words[from..].iter().map(|w| w.to_string()).collect());
            }
        }
    }
    lines
}

#[test]
fn every_documented_command_line_parses() {
    let mut checked = 0;
    for doc in ["deploy/README.md", "deploy/n8n/README.md", "sql/README.md"] {
        for args in documented_command_lines(doc) {
            let mut help = args.clone();
            help.push("--help".into());
            let out = relay(&help, &BTreeMap::new());
            assert_eq!(
                out.status.code(),
                Some(0),
                "{doc}: `n8n-relay {}` does not parse\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "found only {checked} command lines");
}

#[test]
fn an_unknown_environment_name_or_flag_is_caught() {
    // The checks above can fail: a misspelt key and a misspelt flag are refused.
    let bad_env = Invocation {
        origin: "test".into(),
        args: vec!["run".into()],
        env: BTreeMap::from([("RELAY_METRICS__LISTN".into(), "0.0.0.0:9187".into())]),
    };
    let caught = std::panic::catch_unwind(|| check(&bad_env));
    assert!(caught.is_err(), "RELAY_METRICS__LISTN must be refused");
    let bad_flag = Invocation {
        origin: "test".into(),
        args: vec!["migrate".into(), "--example-table".into()],
        env: BTreeMap::new(),
    };
    let caught = std::panic::catch_unwind(|| check(&bad_flag));
    assert!(caught.is_err(), "--example-table must be refused");
}

fn workflows() -> Vec<(String, Value)> {
    let dir = repo().join("deploy/n8n/workflows");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("deploy/n8n/workflows")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().to_string();
            let wf: Value = serde_json::from_str(&std::fs::read_to_string(&p).expect("read"))
                .unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
            (name, wf)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn nodes_of_type<'a>(wf: &'a Value, kind: &str) -> Vec<&'a Value> {
    wf["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["type"] == kind)
        .collect()
}

#[test]
fn every_event_has_an_n8n_receiver_on_its_default_path_that_verifies_the_signature() {
    let workflows = workflows();
    let mut ids = BTreeSet::new();
    let mut paths = BTreeMap::new();
    for (file, wf) in &workflows {
        assert!(ids.insert(wf["id"].to_string()), "{file}: duplicate id");
        let names: BTreeSet<&str> = wf["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["name"].as_str().expect("node name"))
            .collect();
        for (from, outputs) in wf["connections"].as_object().expect("connections") {
            assert!(
                names.contains(from.as_str()),
                "{file}: connection from {from}"
            );
            for target in outputs["main"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_array)
                .flatten()
            {
                let to = target["node"].as_str().expect("target");
                assert!(names.contains(to), "{file}: connection to {to}");
            }
        }
        for hook in nodes_of_type(wf, "n8n-nodes-base.webhook") {
            let p = &hook["parameters"];
            assert_eq!(p["httpMethod"], "POST", "{file}");
            assert_eq!(p["options"]["rawBody"], true, "{file}: Raw Body must be on");
            assert_eq!(p["responseMode"], "responseNode", "{file}");
            paths.insert(p["path"].as_str().expect("path").to_string(), file.clone());
            let crypto = nodes_of_type(wf, "n8n-nodes-base.crypto");
            let verify = crypto
                .iter()
                .find(|c| c["parameters"]["secret"] == "={{ $env.WEBHOOK_SECRET }}")
                .unwrap_or_else(|| panic!("{file}: a Crypto node with WEBHOOK_SECRET"));
            let v = &verify["parameters"];
            assert_eq!(
                (&v["action"], &v["type"], &v["encoding"]),
                (&"hmac".into(), &"SHA256".into(), &"hex".into())
            );
            let value = v["value"].as_str().unwrap_or_default();
            assert!(
                value.contains("x-webhook-timestamp")
                    && value.contains("+ '.' +")
                    && value.contains("binary.data.data"),
                "{file}: signs \"{{timestamp}}.{{raw body}}\": {value}"
            );
            let checks = nodes_of_type(wf, "n8n-nodes-base.if");
            assert!(
                checks
                    .iter()
                    .any(|c| c.to_string().contains("x-webhook-signature-256")
                        && c.to_string().contains("split(',')")),
                "{file}: looks for its signature among X-Webhook-Signature-256's \
                 comma-separated ones (one per secret during a rotation)"
            );
            let codes: BTreeSet<u64> = nodes_of_type(wf, "n8n-nodes-base.respondToWebhook")
                .iter()
                .filter_map(|r| r["parameters"]["options"]["responseCode"].as_u64())
                .collect();
            assert_eq!(codes, BTreeSet::from([200, 401]), "{file}");
        }
    }
    for event in relay_core::EventType::ALL {
        let path = event.default_path();
        assert!(
            paths.contains_key(&path),
            "no receiver for {} on /webhook/{path}",
            event.as_str()
        );
    }
}

#[test]
fn the_approval_and_error_workflows_sign_their_callbacks_with_the_callback_secret() {
    let mut code = String::new();
    for (file, wf) in workflows() {
        for node in nodes_of_type(&wf, "n8n-nodes-base.code") {
            code.push_str(node["parameters"]["jsCode"].as_str().unwrap_or_default());
        }
        for send in nodes_of_type(&wf, "n8n-nodes-base.httpRequest") {
            let p = &send["parameters"];
            assert_eq!(p["method"], "POST", "{file}");
            assert_eq!(
                p["contentType"], "raw",
                "{file}: the bytes sent are the bytes signed"
            );
            assert_eq!(p["rawContentType"], "application/json", "{file}");
            assert!(
                p["url"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("/api/v1/webhooks/n8n/"),
                "{file}"
            );
            let headers = p["headerParameters"].to_string();
            assert!(
                headers.contains("X-Webhook-Timestamp")
                    && headers.contains("X-Webhook-Signature-256"),
                "{file}"
            );
            let signer = nodes_of_type(&wf, "n8n-nodes-base.crypto")
                .into_iter()
                .find(|c| c["parameters"]["secret"] == "={{ $env.N8N_WEBHOOK_SECRET }}")
                .unwrap_or_else(|| panic!("{file}: signs with N8N_WEBHOOK_SECRET"));
            assert_eq!(
                signer["parameters"]["value"],
                "={{ $json.timestamp + '.' + $json.body }}"
            );
            assert_eq!(
                p["body"], "={{ $json.body }}",
                "{file}: sends what it signed"
            );
        }
    }
    // The callbacks the workflows build: the approval's kind picks demo- or video-approval.
    for needle in [
        "'workflow-status'",
        "'workflow-completed'",
        "'error-notification'",
        "kind + '-approval'",
        "'video' ? 'video' : 'demo'",
    ] {
        assert!(code.contains(needle), "no workflow builds {needle}");
    }
}
