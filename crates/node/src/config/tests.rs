//! The node configuration's tests: the documented shapes load, every documented key is read,
//! bad values name their field.

use super::*;

#[test]
fn the_documented_config_yaml_shape_loads() {
    let config = NodeConfig::from_yaml(
        r#"
node:
  name: "my-node"
  type: "Full"  # "Full" = honeypot support, "Agent" = lightweight

server:
  address: "manager.example.com:9001"
  heartbeat_interval: 30
  reconnect_delay: 5

tls:
  enabled: false
  ca_file: "~/.honeybee/certs/ca.crt"
  insecure_skip_verify: false

auth:
  totp_enabled: true

honeypot:
  enabled: true
  base_dir: "~/.honeybee/honeypots"
  default_ssh_port: 2222
  default_telnet_port: 2223

log:
  level: "info"
  format: "json"
"#,
    )
    .unwrap();
    // The documented file reads as it is; it names a remote Core without TLS, which a
    // node refuses until told that the network is trusted.
    let refusal = config.validate().unwrap_err().to_string();
    assert!(refusal.contains("tls.allow_plaintext"), "{refusal}");
    let mut config = config;
    config.tls.allow_plaintext = true;
    config.validate().unwrap();
    assert_eq!(config.node.name, "my-node");
    assert_eq!(config.server.address, "manager.example.com:9001");
    assert_eq!(config.server.heartbeat_interval(), Duration::from_secs(30));
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.ingest, IngestSection::default());
}

/// Every key of README's node table, with a value other than its default, is read.
#[test]
fn every_documented_key_is_read() {
    let config = NodeConfig::from_yaml(
        r#"
node: {name: n1, type: Agent, data_dir: /srv/hb}
server:
  address: "[::1]:9009"
  heartbeat_interval: 15
  reconnect_delay: 2.5
  max_reconnect_delay: 30
  connect_timeout: 4
  max_envelope_bytes: 2097152
tls:
  enabled: true
  ca_file: /srv/ca.pem
  ca_fingerprint: "ab:cd"
  server_name: core.internal
  insecure_skip_verify: false
  allow_plaintext: false
  cert_file: /srv/node.pem
  key_file: /srv/node.key
auth:
  enrollment_token: hbe_123
  totp_secret_file: /srv/totp
  totp_enabled: true
honeypot:
  enabled: false
  base_dir: /srv/pots
  potstore: /srv/potstore
  python: /usr/local/bin/python3
  run_as: bees
  stop_grace: 3
  restart_backoff: 0.5
  log_max_bytes: 4096
  log_files: 2
  default_ssh_port: 2022
  default_telnet_port: 2023
log: {level: debug, format: json}
ingest:
  host: 127.0.0.2
  port: 9200
  max_line_bytes: 8192
  max_connections: 16
  max_connections_per_sender: 4
  queue_capacity: 64
  idle_timeout: 60
  max_events_per_second: 500
spool:
  directory: /srv/spool
  max_bytes: 10000000
  segment_bytes: 1000000
  sync_interval_ms: 5
  full_policy: drop_oldest
metrics: {listen: "127.0.0.1:9101"}
"#,
    )
    .unwrap();
    config.validate().unwrap();
    assert_eq!(
        (config.node.name.as_str(), config.node.node_type),
        ("n1", NodeTypeSetting::Agent)
    );
    assert_eq!(config.server.address, "[::1]:9009");
    assert_eq!(config.server.reconnect_delay, 2.5);
    assert_eq!(config.tls.server_name.as_deref(), Some("core.internal"));
    assert_eq!(config.auth.enrollment_token.as_deref(), Some("hbe_123"));
    assert_eq!(config.honeypot.run_as, "bees");
    assert_eq!(config.honeypot.default_telnet_port, 2023);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.ingest.max_events_per_second, 500);
    assert_eq!(config.ingest.max_connections_per_sender, 4);
    assert_eq!(config.spool.full_policy, SpoolFullPolicy::DropOldest);
    assert_eq!(config.spool.sync_interval_ms, 5);
    assert_eq!(config.metrics.listen.as_deref(), Some("127.0.0.1:9101"));
    // A misspelt key is an error that names it.
    let error = NodeConfig::from_yaml("server:\n  adress: x:1\n").unwrap_err();
    assert!(error.contains("adress"), "{error}");
}

#[test]
fn relative_paths_become_absolute_against_the_current_directory() {
    let config = NodeConfig::from_yaml(
        "node:\n  data_dir: honeybee-data/node\nspool:\n  directory: spool-here\n",
    )
    .unwrap()
    .with_absolute_paths()
    .unwrap();
    let here = std::env::current_dir().unwrap();
    assert_eq!(config.node.data_dir, here.join("honeybee-data/node"));
    assert_eq!(config.spool_directory(), here.join("spool-here"));
    assert!(config
        .honeypot
        .base_dir(&config.node.data_dir)
        .is_absolute());
    assert!(config.totp_secret_file().is_absolute());
}

#[test]
fn empty_file_is_the_defaults() {
    let config = NodeConfig::from_yaml("").unwrap();
    config.validate().unwrap();
    assert_eq!(config.ingest.port, 9100);
    assert_eq!(config.server.address, "127.0.0.1:9001");
}

#[test]
fn plaintext_to_a_core_beyond_this_machine_needs_an_explicit_yes() {
    let remote = NodeConfig::from_yaml("server:\n  address: 192.0.2.10:9001\n").unwrap();
    let error = remote.validate().unwrap_err().to_string();
    assert!(error.contains("tls.allow_plaintext"), "{error}");
    let named = NodeConfig::from_yaml("server:\n  address: core.example.org:9001\n").unwrap();
    assert!(named.validate().is_err(), "a name is not known to be local");
    for local in ["127.0.0.1:9001", "localhost:9001", "[::1]:9001"] {
        let yaml = format!("server:\n  address: \"{local}\"\n");
        NodeConfig::from_yaml(&yaml).unwrap().validate().unwrap();
    }
    let allowed = NodeConfig::from_yaml(
        "server:\n  address: 192.0.2.10:9001\ntls:\n  allow_plaintext: true\n",
    )
    .unwrap();
    allowed.validate().unwrap();
}

#[test]
fn tls_without_a_way_to_verify_the_core_is_refused() {
    let config = NodeConfig::from_yaml("tls:\n  enabled: true\n").unwrap();
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("tls.ca_fingerprint"), "{error}");
    let config = NodeConfig::from_yaml("tls:\n  enabled: true\n  ca_fingerprint: ab\n").unwrap();
    config.validate().unwrap();
}

#[test]
fn bad_values_name_the_field_and_value() {
    let config = NodeConfig::from_yaml("server:\n  address: nocolon\n").unwrap();
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("server.address") && error.contains("nocolon"),
        "{error}"
    );
    let error = NodeConfig::from_yaml("server:\n  adress: x\n").unwrap_err();
    assert!(error.contains("adress"), "{error}");
    let config = NodeConfig::from_yaml("ingest:\n  max_line_bytes: 2000000\n").unwrap();
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("ingest.max_line_bytes"), "{error}");
    let config = NodeConfig::from_yaml("ingest:\n  queue_max_bytes: 1000\n").unwrap();
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("ingest.queue_max_bytes") && error.contains("1000"),
        "{error}"
    );
    let config = NodeConfig::from_yaml("ingest:\n  queue_max_bytes: 1048576\n").unwrap();
    config.validate().unwrap();
    assert_eq!(config.ingest.queue_max_bytes, 1 << 20);
    let config =
        NodeConfig::from_yaml("server:\n  reconnect_delay: 10\n  max_reconnect_delay: 1\n")
            .unwrap();
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("max_reconnect_delay"), "{error}");
    let config = NodeConfig::from_yaml("spool:\n  sync_interval_ms: 5000\n").unwrap();
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("spool.sync_interval_ms") && error.contains("5000"),
        "{error}"
    );
}

#[test]
fn a_pot_base_directory_that_is_the_data_directory_or_holds_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for base_dir in [data.clone(), data.join("."), dir.path().to_path_buf()] {
        let mut config = NodeConfig::default();
        config.node.data_dir = data.clone();
        config.honeypot.base_dir = Some(base_dir.clone());
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("honeypot.base_dir")
                && error.contains(&base_dir.display().to_string())
                && error.contains("must not be node.data_dir nor contain it"),
            "{error}"
        );
    }
    let mut config = NodeConfig::default();
    config.node.data_dir = data.clone();
    config.honeypot.base_dir = Some(data.join("pots"));
    config.validate().unwrap();
}
