//! The configuration: documented shapes load, defaults hold, bad values are named.

use super::*;

#[test]
fn the_documented_bee_config_shape_loads() {
    let config = CoreConfig::from_toml(
        r#"
[server]
host = "127.0.0.1"
node_port = 9001
backend_port = 9002
debug = false

[logging]
level = "debug"
folder = "logs"
force_color = true

[proxy]
enabled = true
host = "0.0.0.0"
port = 9003
"#,
    )
    .unwrap();
    config.validate().unwrap();
    assert_eq!(config.logging.level, "debug");
    assert_eq!(config.logging.folder, Some(PathBuf::from("logs")));
    assert!(config.proxy.enabled);
    assert_eq!(config.storage, StorageConfig::default());
}

#[test]
fn empty_config_is_the_defaults() {
    let config = CoreConfig::from_toml("").unwrap();
    assert_eq!(config, CoreConfig::default());
    config.validate().unwrap();
    assert_eq!(config.server.offline_after(), Duration::from_secs(90));
}

#[test]
fn integer_seconds_and_storage_section_are_read() {
    let config = CoreConfig::from_toml(
        "[server]\nheartbeat_interval = 5\n[storage]\ndata_dir = \"/tmp/x\"\nsqlite_synchronous = \"normal\"\n",
    )
    .unwrap();
    assert_eq!(config.server.heartbeat_interval(), Duration::from_secs(5));
    assert_eq!(config.storage.sqlite_synchronous, Synchronous::Normal);
}

#[test]
fn bad_values_name_the_field_and_value() {
    let mut config = CoreConfig::default();
    config.server.host = "localhost:9".into();
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("server.host") && error.contains("localhost:9"),
        "{error}"
    );

    let error = CoreConfig::from_toml("[server]\nnode_prot = 1\n").unwrap_err();
    assert!(error.contains("node_prot"), "{error}");

    let mut config = CoreConfig::default();
    config.server.host = "0.0.0.0".into();
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("tls.allow_plaintext"), "{error}");
    config.tls.enabled = true;
    config.validate().unwrap();
    assert_eq!(config.server.enrollment_policy(), EnrollmentPolicy::Token);
    config.server.enrollment = Some(EnrollmentPolicy::Open);
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("server.enrollment"), "{error}");

    let config = CoreConfig::from_toml("[server]\nenrollment = \"token\"\n").unwrap();
    assert_eq!(config.server.enrollment_policy(), EnrollmentPolicy::Token);
    // Loopback is no exception: a honeypot's user on the machine reaches it too.
    assert_eq!(
        CoreConfig::default().server.enrollment_policy(),
        EnrollmentPolicy::Token
    );
    let mut open = CoreConfig::default();
    open.server.enrollment = Some(EnrollmentPolicy::Open);
    open.validate().unwrap();

    let mut config = CoreConfig::default();
    config.server.heartbeat_interval = 0.0;
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("server.heartbeat_interval"), "{error}");
}

#[test]
fn byte_budgets_are_read_and_checked() {
    let config = CoreConfig::from_toml(
        "[storage]\nqueue_max_bytes = 8388608\n[server]\ncommand_answers_max_bytes = 4096\n[api]\npage_max_bytes = 65536\n",
    )
    .unwrap();
    config.validate().unwrap();
    assert_eq!(
        (
            config.storage.queue_max_bytes,
            config.server.command_answers_max_bytes,
            config.api.page_max_bytes
        ),
        (8 << 20, 4096, 65536)
    );
    let mut config = CoreConfig::default();
    config.storage.queue_max_bytes = config.server.max_envelope_bytes - 1;
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("storage.queue_max_bytes") && error.contains("server.max_envelope_bytes"),
        "{error}"
    );
    let mut config = CoreConfig::default();
    config.api.page_max_bytes = 0;
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("api.page_max_bytes \"0\"") || error.contains("api.page_max_bytes"),
        "{error}"
    );
}

#[test]
fn remote_nodes_do_not_expose_the_api() {
    let config =
        CoreConfig::from_toml("[server]\nhost = \"0.0.0.0\"\n[tls]\nenabled = true\n").unwrap();
    config.validate().unwrap();
    assert_eq!(config.server.api_host, "127.0.0.1");
    assert!(config.server.api_is_loopback());
}

#[test]
fn a_plaintext_api_beyond_loopback_is_refused_unless_allowed() {
    let mut config = CoreConfig::from_toml("[server]\napi_host = \"0.0.0.0\"\n").unwrap();
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("server.api_host")
            && error.contains("0.0.0.0")
            && error.contains("tls.allow_plaintext_api"),
        "{error}"
    );
    config.tls.allow_plaintext_api = true;
    config.validate().unwrap();
    config.tls.allow_plaintext_api = false;
    config.tls.enabled = true;
    config.tls.api = true;
    config.validate().unwrap();
}

#[test]
fn an_unauthenticated_api_is_refused_beyond_loopback() {
    let mut config = CoreConfig::from_toml(
        "[server]\napi_host = \"0.0.0.0\"\n[api]\nauth = \"none\"\n[tls]\nenabled = true\napi = true\n",
    )
    .unwrap();
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("api.auth") && error.contains("none"),
        "{error}"
    );
    config.server.api_host = "::1".into();
    config.validate().unwrap();
}

#[test]
fn connection_limits_are_validated() {
    let mut config = CoreConfig::default();
    config.server.max_unregistered_envelope_bytes = 1000;
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("server.max_unregistered_envelope_bytes"),
        "{error}"
    );
    let mut config = CoreConfig::default();
    config.api.max_connections_per_address = 0;
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("api.max_connections_per_address"), "{error}");
    let mut config = CoreConfig::default();
    config.api.allowed_hosts = vec!["proxy example".into()];
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("api.allowed_hosts"), "{error}");
}
