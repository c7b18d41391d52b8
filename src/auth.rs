//! API keys, roles and tenants: who may call which RPC, and on whose budget.
//!
//! The `[auth]` config holds only SHA-256 hashes of the keys (`switchyard auth hash-key` prints
//! one), so neither a config file nor a log line can leak a usable key; callers send the key itself
//! as `authorization: Bearer <key>` metadata. Each key has a [`Role`]: `client` may Route, send
//! Feedback and read GetArmStats, GetBudgets and GetSpend; `admin` may also ReportHealth, ResetArms,
//! Reload, InvalidateCache and Backup. A client key may belong to a tenant, which fixes the budget it
//! charges and the task classes it may use, so one team cannot spend another's budget.
//!
//! Everything here is pure: [`KeyTable::authorize`] takes the RPC's path and the metadata value and
//! returns a [`Principal`] or an [`AuthError`] (UNAUTHENTICATED or PERMISSION_DENIED at the gRPC
//! edge); the tenant checks take the request's fields. The presented key is hashed and compared
//! with every configured hash in constant time, without stopping at the first match, so response
//! time says nothing about how close a guess was or which key matched. No error message or
//! `Debug` output contains the presented key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use subtle::ConstantTimeEq;

/// The gRPC service whose RPCs the roles govern.
pub const ROUTE_SERVICE: &str = "switchyard.v1.Route";

/// Services that stay open without a key unless configured otherwise: load balancers and container
/// runtimes probe health without credentials.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Reflection services (v1 and v1alpha): they describe the API, which the .proto already publishes.
pub const REFLECTION_SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Longest piece of caller input echoed back in an error message.
const MAX_ECHO_CHARS: usize = 200;

/// Length in bytes of a SHA-256 digest.
const DIGEST_LEN: usize = 32;

/// `[auth]`: the keys and tenants, as written in the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Keep `grpc.health.v1.Health` open without a key (default true).
    #[serde(default = "default_true")]
    pub open_health: bool,
    /// Keep server reflection open without a key (default true).
    #[serde(default = "default_true")]
    pub open_reflection: bool,
    /// Keys by a name used in logs and error messages (never the key itself).
    #[serde(default)]
    pub keys: BTreeMap<String, KeyConfig>,
    /// Tenants by name.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
}

fn default_true() -> bool {
    true
}

/// `[auth.keys.NAME]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// SHA-256 of the key, 64 hex digits (`switchyard auth hash-key`).
    pub sha256: String,
    pub role: Role,
    /// A tenant from `[auth.tenants]` (client keys only).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// `[auth.tenants.NAME]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The only budget this tenant's keys charge; a Route without `budget_key` gets this one.
    pub budget_key: String,
    /// Task classes the tenant may use; absent = all.
    #[serde(default)]
    pub task_classes: Option<Vec<String>>,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Route, Feedback, GetArmStats, GetBudgets, GetSpend.
    Client,
    /// Everything a client may, plus the operator RPCs.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }
}

/// The role each `switchyard.v1.Route` RPC needs. An RPC missing here needs `admin` (a unit test
/// fails when the proto gains an RPC that is not listed, so each new RPC states its role).
pub const RPC_ROLES: [(&str, Role); 11] = [
    ("Route", Role::Client),
    ("Feedback", Role::Client),
    ("GetArmStats", Role::Client),
    ("GetBudgets", Role::Client),
    ("GetSpend", Role::Client),
    ("ReportHealth", Role::Admin),
    ("ResetArms", Role::Admin),
    ("Reload", Role::Admin),
    ("GetAbReport", Role::Client),
    ("InvalidateCache", Role::Admin),
    ("Backup", Role::Admin),
];

/// The role needed to call `method` of `switchyard.v1.Route`; unknown methods need admin.
pub fn required_role(method: &str) -> Role {
    RPC_ROLES
        .iter()
        .find(|(m, _)| *m == method)
        .map_or(Role::Admin, |(_, r)| *r)
}

/// A config mistake in `[auth]`, naming the key path and what would be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct AuthConfigError {
    pub key: String,
    pub message: String,
}

fn config_error(key: impl Into<String>, message: impl Into<String>) -> AuthConfigError {
    AuthConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// Why a call was refused; maps to one gRPC code each at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key, a malformed `authorization` value, or a key that is not configured.
    #[error("{0}")]
    Unauthenticated(String),
    /// A known key whose role or tenant does not allow this call.
    #[error("{0}")]
    PermissionDenied(String),
}

/// A tenant's scope, resolved from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub name: String,
    pub budget_key: String,
    /// None = every task class.
    pub task_classes: Option<BTreeSet<String>>,
}

/// Who is calling: the key's name (for logs), its role and its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_name: String,
    pub role: Role,
    pub tenant: Option<Tenant>,
}

/// The outcome of a successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// An open service (health, reflection): no key was needed or looked at.
    Open,
    /// A configured key.
    Key(Principal),
}

struct Entry {
    digest: [u8; DIGEST_LEN],
    principal: Principal,
}

/// The validated keys, ready for [`KeyTable::authorize`]. Swapped whole on reload.
pub struct KeyTable {
    entries: Vec<Entry>,
    open_health: bool,
    open_reflection: bool,
}

impl fmt::Debug for KeyTable {
    /// Names and roles only: the hashes stay out of logs too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyTable")
            .field(
                "keys",
                &self
                    .entries
                    .iter()
                    .map(|e| (&e.principal.key_name, e.principal.role.as_str()))
                    .collect::<Vec<_>>(),
            )
            .field("open_health", &self.open_health)
            .field("open_reflection", &self.open_reflection)
            .finish()
    }
}

impl KeyTable {
    /// Validates `[auth]` against the configured task classes: every hash is 64 hex digits and
    /// distinct, every tenant named by a key exists and only client keys have one, every tenant
    /// has a budget key and names only known task classes.
    pub fn from_config(
        config: &AuthConfig,
        known_task_classes: &BTreeSet<String>,
    ) -> Result<KeyTable, AuthConfigError> {
        let mut tenants = BTreeMap::new();
        for (name, t) in &config.tenants {
            let path = format!("auth.tenants.{name}");
            if t.budget_key.trim().is_empty() {
                return Err(config_error(
                    format!("{path}.budget_key"),
                    "must name the budget this tenant's keys charge",
                ));
            }
            let classes = match &t.task_classes {
                None => None,
                Some(list) => {
                    if list.is_empty() {
                        return Err(config_error(
                            format!("{path}.task_classes"),
                            "is empty, so the tenant could use nothing; omit it to allow every class",
                        ));
                    }
                    let mut set = BTreeSet::new();
                    for c in list {
                        if !known_task_classes.contains(c) {
                            return Err(config_error(
                                format!("{path}.task_classes"),
                                format!(
                                    "`{}` is not a configured task class (known: {})",
                                    echo(c),
                                    join(known_task_classes)
                                ),
                            ));
                        }
                        set.insert(c.clone());
                    }
                    Some(set)
                }
            };
            tenants.insert(
                name.clone(),
                Tenant {
                    name: name.clone(),
                    budget_key: t.budget_key.clone(),
                    task_classes: classes,
                },
            );
        }

        let mut entries: Vec<Entry> = Vec::with_capacity(config.keys.len());
        for (name, k) in &config.keys {
            let path = format!("auth.keys.{name}");
            let digest =
                parse_digest(&k.sha256).map_err(|m| config_error(format!("{path}.sha256"), m))?;
            if let Some(other) = entries.iter().find(|e| e.digest == digest) {
                return Err(config_error(
                    format!("{path}.sha256"),
                    format!(
                        "is the same hash as auth.keys.{}; give each key its own secret",
                        other.principal.key_name
                    ),
                ));
            }
            let tenant = match &k.tenant {
                None => None,
                Some(_) if k.role == Role::Admin => {
                    return Err(config_error(
                        format!("{path}.tenant"),
                        "admin keys act for every tenant; give the tenant a client key instead",
                    ))
                }
                Some(t) => Some(tenants.get(t).cloned().ok_or_else(|| {
                    config_error(
                        format!("{path}.tenant"),
                        format!(
                            "`{}` is not in [auth.tenants] (known: {})",
                            echo(t),
                            join(tenants.keys())
                        ),
                    )
                })?),
            };
            entries.push(Entry {
                digest,
                principal: Principal {
                    key_name: name.clone(),
                    role: k.role,
                    tenant,
                },
            });
        }
        Ok(KeyTable {
            entries,
            open_health: config.open_health,
            open_reflection: config.open_reflection,
        })
    }

    /// Number of configured keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks one call: `path` is the gRPC path (`/package.Service/Method`), `authorization` the
    /// value of the `authorization` metadata, if any. Open services pass without a key; any other
    /// call needs a configured key (UNAUTHENTICATED otherwise) whose role allows the RPC
    /// (PERMISSION_DENIED otherwise).
    pub fn authorize(&self, path: &str, authorization: Option<&str>) -> Result<Access, AuthError> {
        let (service, method) = split_path(path);
        if self.is_open(service) {
            return Ok(Access::Open);
        }
        let principal = self.authenticate(authorization)?;
        let needed = if service == ROUTE_SERVICE {
            required_role(method)
        } else {
            Role::Admin
        };
        if principal.role < needed {
            return Err(AuthError::PermissionDenied(format!(
                "{} needs the {} role; key `{}` has role {}",
                echo(path),
                needed.as_str(),
                principal.key_name,
                principal.role.as_str()
            )));
        }
        Ok(Access::Key(principal))
    }

    fn is_open(&self, service: &str) -> bool {
        (self.open_health && service == HEALTH_SERVICE)
            || (self.open_reflection && REFLECTION_SERVICES.contains(&service))
    }

    /// The principal of the key in `authorization` (`Bearer <key>`).
    fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let value = authorization.ok_or_else(|| {
            AuthError::Unauthenticated(
                "missing API key: send `authorization: Bearer <key>` metadata".into(),
            )
        })?;
        let key = bearer_token(value)?;
        let digest = sha256(key.as_bytes());
        // Compare with every entry, keeping the match without branching on it early.
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            let equal: bool = e.digest.ct_eq(&digest).into();
            if equal && found.is_none() {
                found = Some(e);
            }
        }
        found.map(|e| e.principal.clone()).ok_or_else(|| {
            AuthError::Unauthenticated("unknown API key: it matches no hash in [auth.keys]".into())
        })
    }
}

/// The key inside an `authorization` value `Bearer <key>` (scheme case-insensitive, RFC 6750).
/// Errors never include the value, which may be a mistyped key.
fn bearer_token(value: &str) -> Result<&str, AuthError> {
    let malformed = || {
        AuthError::Unauthenticated(
            "malformed `authorization` metadata: expected `Bearer <key>`".into(),
        )
    };
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed());
    }
    let key = rest.trim();
    if key.is_empty() {
        return Err(malformed());
    }
    Ok(key)
}

impl Principal {
    /// The budget key a Route of this principal charges: a tenant's key charges its tenant's
    /// budget (the requested one must be empty or equal to it); other keys charge what they ask.
    pub fn budget_key_for(&self, requested: &str) -> Result<String, AuthError> {
        match &self.tenant {
            None => Ok(requested.to_string()),
            Some(t) if requested.is_empty() || requested == t.budget_key => {
                Ok(t.budget_key.clone())
            }
            Some(t) => Err(AuthError::PermissionDenied(format!(
                "key `{}` of tenant `{}` may only charge budget `{}`, not `{}`; omit budget_key or send `{}`",
                self.key_name,
                t.name,
                t.budget_key,
                echo(requested),
                t.budget_key
            ))),
        }
    }

    /// Whether this principal may use `task_class` (Route) or see its arms (GetArmStats).
    pub fn may_use_class(&self, task_class: &str) -> bool {
        match &self.tenant {
            Some(Tenant {
                task_classes: Some(set),
                ..
            }) => set.contains(task_class),
            _ => true,
        }
    }

    /// [`Principal::may_use_class`] as a check with the PERMISSION_DENIED message.
    pub fn check_class(&self, task_class: &str) -> Result<(), AuthError> {
        if self.may_use_class(task_class) {
            return Ok(());
        }
        let (tenant, allowed) = match &self.tenant {
            Some(Tenant {
                name,
                task_classes: Some(set),
                ..
            }) => (name.as_str(), join(set)),
            _ => ("", String::new()),
        };
        Err(AuthError::PermissionDenied(format!(
            "tenant `{tenant}` may not use task class `{}` (allowed: {allowed})",
            echo(task_class)
        )))
    }

    /// Whether this principal may see the budget `budget_key` (GetBudgets): a tenant sees its own.
    pub fn may_see_budget(&self, budget_key: &str) -> bool {
        self.tenant
            .as_ref()
            .is_none_or(|t| t.budget_key == budget_key)
    }

    /// Feedback is allowed only for decisions made under the caller's tenant; `decision_tenant` is
    /// the tenant recorded with the decision (None when it was made without one).
    pub fn check_decision(&self, decision_tenant: Option<&str>) -> Result<(), AuthError> {
        match &self.tenant {
            None => Ok(()),
            Some(t) if decision_tenant == Some(t.name.as_str()) => Ok(()),
            Some(t) => Err(AuthError::PermissionDenied(format!(
                "key `{}` of tenant `{}` may only send feedback for decisions made under that tenant",
                self.key_name, t.name
            ))),
        }
    }
}

/// Splits `/package.Service/Method` into its service and method ("" where absent).
fn split_path(path: &str) -> (&str, &str) {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    trimmed.split_once('/').unwrap_or((trimmed, ""))
}

/// SHA-256 of `bytes`.
fn sha256(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

/// The hex SHA-256 of a key, as `[auth.keys.NAME] sha256` wants it. Surrounding whitespace is
/// dropped, as it is from the `authorization` value.
pub fn hash_key_hex(key: &str) -> String {
    sha256(key.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_digest(hex: &str) -> Result<[u8; DIGEST_LEN], String> {
    let hex = hex.trim();
    let bad = || {
        format!(
            "`{}` is not a SHA-256 hash: expected 64 hex digits, as printed by `switchyard auth hash-key`",
            echo(hex)
        )
    };
    if hex.len() != 2 * DIGEST_LEN || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; DIGEST_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn echo(s: &str) -> String {
    s.chars().take(MAX_ECHO_CHARS).collect()
}

fn join<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    let v: Vec<&str> = items.into_iter().map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const ADMIN_KEY: &str = "sk-admin-0123";
    const TEAM_A_KEY: &str = "sk-team-a-4567";
    const OPEN_KEY: &str = "sk-client-89ab";

    fn classes() -> BTreeSet<String> {
        ["qa", "code", "summarize"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn config_text() -> String {
        format!(
            r#"
[keys.ops]
sha256 = "{}"
role = "admin"
[keys.team-a-bot]
sha256 = "{}"
role = "client"
tenant = "team-a"
[keys.batch]
sha256 = "{}"
role = "client"
[tenants.team-a]
budget_key = "team-a"
task_classes = ["qa"]
"#,
            hash_key_hex(ADMIN_KEY),
            hash_key_hex(TEAM_A_KEY),
            hash_key_hex(OPEN_KEY)
        )
    }

    fn parse(text: &str) -> AuthConfig {
        toml::from_str(text).unwrap()
    }

    fn table() -> KeyTable {
        KeyTable::from_config(&parse(&config_text()), &classes()).unwrap()
    }

    fn bearer(key: &str) -> String {
        format!("Bearer {key}")
    }

    fn principal(path: &str, key: &str) -> Principal {
        match table().authorize(path, Some(&bearer(key))).unwrap() {
            Access::Key(p) => p,
            Access::Open => panic!("{path} was open"),
        }
    }

    #[test]
    fn hash_is_sha256_hex_of_the_trimmed_key() {
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            hash_key_hex("abc\n"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_digest(&hash_key_hex("abc")).unwrap(), sha256(b"abc"));
    }

    #[test]
    fn every_rpc_of_the_proto_has_a_role() {
        use prost::Message;
        let set =
            prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let methods: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| f.service.iter())
            .filter(|s| s.name() == "Route")
            .flat_map(|s| s.method.iter().map(|m| m.name().to_string()))
            .collect();
        assert!(!methods.is_empty());
        for m in methods {
            assert!(
                RPC_ROLES.iter().any(|(name, _)| *name == m),
                "RPC {m} has no entry in RPC_ROLES: state its role"
            );
        }
    }

    #[test]
    fn roles_per_rpc() {
        let t = table();
        for (method, role) in RPC_ROLES {
            let path = format!("/{ROUTE_SERVICE}/{method}");
            let admin = t.authorize(&path, Some(&bearer(ADMIN_KEY)));
            assert!(
                matches!(admin, Ok(Access::Key(ref p)) if p.key_name == "ops"),
                "{path}: {admin:?}"
            );
            let client = t.authorize(&path, Some(&bearer(OPEN_KEY)));
            match role {
                Role::Client => assert!(matches!(client, Ok(Access::Key(_))), "{path}: {client:?}"),
                Role::Admin => match client {
                    Err(AuthError::PermissionDenied(m)) => {
                        assert!(
                            m.contains("needs the admin role") && m.contains("`batch`"),
                            "{m}"
                        )
                    }
                    other => panic!("{path}: {other:?}"),
                },
            }
        }
        // An RPC not listed (a future one) and any other service need admin.
        for path in ["/switchyard.v1.Route/SomethingNew", "/other.Service/Call"] {
            assert!(matches!(
                t.authorize(path, Some(&bearer(OPEN_KEY))),
                Err(AuthError::PermissionDenied(_))
            ));
            assert!(matches!(
                t.authorize(path, Some(&bearer(ADMIN_KEY))),
                Ok(Access::Key(_))
            ));
        }
    }

    #[test]
    fn missing_malformed_and_unknown_keys_are_unauthenticated_without_echoing_the_key() {
        let t = table();
        let path = "/switchyard.v1.Route/Route";
        let cases = [
            None,
            Some("sk-admin-0123".to_string()),       // no scheme
            Some("Basic sk-admin-0123".to_string()), // wrong scheme
            Some("Bearer ".to_string()),
            Some("Bearer sk-admin-0124".to_string()), // one character off
            Some("Bearer sk-admin-0123x".to_string()),
        ];
        for c in cases {
            match t.authorize(path, c.as_deref()) {
                Err(AuthError::Unauthenticated(m)) => {
                    assert!(!m.contains("sk-admin"), "message echoes the key: {m}");
                    assert!(m.contains("Bearer") || m.contains("unknown API key"), "{m}");
                }
                other => panic!("{c:?}: {other:?}"),
            }
        }
        // The scheme is case-insensitive and surrounding spaces are dropped.
        assert!(t.authorize(path, Some("bearer   sk-admin-0123  ")).is_ok());
    }

    #[test]
    fn health_and_reflection_are_open_by_default_and_can_be_closed() {
        let t = table();
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(t.authorize(path, None), Ok(Access::Open));
        }
        let closed = format!(
            "open_health = false\nopen_reflection = false\n{}",
            config_text()
        );
        let t = KeyTable::from_config(&parse(&closed), &classes()).unwrap();
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(matches!(
                t.authorize(path, None),
                Err(AuthError::Unauthenticated(_))
            ));
            // Closed services need admin (they are not client RPCs).
            assert!(matches!(
                t.authorize(path, Some(&bearer(ADMIN_KEY))),
                Ok(Access::Key(_))
            ));
        }
    }

    #[test]
    fn a_tenant_key_charges_only_its_budget() {
        let p = principal("/switchyard.v1.Route/Route", TEAM_A_KEY);
        assert_eq!(p.budget_key_for("").unwrap(), "team-a");
        assert_eq!(p.budget_key_for("team-a").unwrap(), "team-a");
        match p.budget_key_for("team-b") {
            Err(AuthError::PermissionDenied(m)) => {
                assert!(m.contains("team-b") && m.contains("`team-a`"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        let long = "x".repeat(1000);
        let Err(AuthError::PermissionDenied(m)) = p.budget_key_for(&long) else {
            panic!()
        };
        assert!(m.len() < 500, "echo is bounded: {} chars", m.len());
        // Keys without a tenant charge what they ask for.
        let free = principal("/switchyard.v1.Route/Route", OPEN_KEY);
        assert_eq!(free.budget_key_for("team-b").unwrap(), "team-b");
        assert_eq!(free.budget_key_for("").unwrap(), "");
    }

    #[test]
    fn a_tenant_uses_and_sees_only_its_classes_and_budget() {
        let p = principal("/switchyard.v1.Route/GetArmStats", TEAM_A_KEY);
        assert!(p.check_class("qa").is_ok());
        match p.check_class("code") {
            Err(AuthError::PermissionDenied(m)) => {
                assert!(
                    m.contains("`team-a`") && m.contains("`code`") && m.contains("qa"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(p.may_see_budget("team-a") && !p.may_see_budget("team-b"));
        let free = principal("/switchyard.v1.Route/GetArmStats", OPEN_KEY);
        assert!(free.check_class("code").is_ok() && free.may_see_budget("team-b"));
    }

    #[test]
    fn feedback_only_for_the_tenants_own_decisions() {
        let p = principal("/switchyard.v1.Route/Feedback", TEAM_A_KEY);
        assert!(p.check_decision(Some("team-a")).is_ok());
        assert!(matches!(
            p.check_decision(Some("team-b")),
            Err(AuthError::PermissionDenied(_))
        ));
        assert!(matches!(
            p.check_decision(None),
            Err(AuthError::PermissionDenied(_))
        ));
        let free = principal("/switchyard.v1.Route/Feedback", OPEN_KEY);
        assert!(free.check_decision(Some("team-b")).is_ok() && free.check_decision(None).is_ok());
        let admin = principal("/switchyard.v1.Route/Feedback", ADMIN_KEY);
        assert!(admin.check_decision(Some("team-a")).is_ok());
    }

    #[test]
    fn config_errors_name_the_key_and_what_is_right() {
        let base = config_text();
        let cases: [(String, &str, &str); 7] = [
            (
                base.replace(&hash_key_hex(ADMIN_KEY), "abc"),
                "auth.keys.ops.sha256",
                "64 hex digits",
            ),
            (
                base.replace(&hash_key_hex(ADMIN_KEY), &"zz".repeat(32)),
                "auth.keys.ops.sha256",
                "64 hex digits",
            ),
            (
                base.replace(&hash_key_hex(OPEN_KEY), &hash_key_hex(ADMIN_KEY)),
                "auth.keys",
                "same hash",
            ),
            (
                base.replace("tenant = \"team-a\"", "tenant = \"team-z\""),
                "auth.keys.team-a-bot.tenant",
                "not in [auth.tenants]",
            ),
            (
                base.replace("role = \"admin\"", "role = \"admin\"\ntenant = \"team-a\""),
                "auth.keys.ops.tenant",
                "client key",
            ),
            (
                base.replace(
                    "task_classes = [\"qa\"]",
                    "task_classes = [\"qa\", \"chat\"]",
                ),
                "auth.tenants.team-a.task_classes",
                "`chat` is not a configured task class",
            ),
            (
                base.replace("budget_key = \"team-a\"", "budget_key = \" \""),
                "auth.tenants.team-a.budget_key",
                "must name",
            ),
        ];
        for (text, key, message) in cases {
            let err = KeyTable::from_config(&parse(&text), &classes()).unwrap_err();
            assert!(err.key.starts_with(key), "{err}");
            assert!(err.message.contains(message), "{err}");
        }
    }

    #[test]
    fn unknown_fields_and_roles_are_refused_by_the_parser() {
        for bad in [
            "[keys.x]\nsha256 = \"00\"\nrole = \"root\"\n",
            "[keys.x]\nsha256 = \"00\"\nrole = \"client\"\nkey = \"plaintext\"\n",
            "allow_all = true\n",
        ] {
            assert!(toml::from_str::<AuthConfig>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_shows_names_not_hashes() {
        let text = format!("{:?}", table());
        assert!(text.contains("ops") && text.contains("admin"), "{text}");
        assert!(!text.contains(&hash_key_hex(ADMIN_KEY)[..16]), "{text}");
    }
}
