//! Roles, the permissions they hold, and which permission each call needs where. The
//! table in docs/config-service.md ("Permissions") is checked against this by a test that
//! runs every call as every role.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Reader,
    Editor,
    Approver,
    Publisher,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Reader,
        Role::Editor,
        Role::Approver,
        Role::Publisher,
        Role::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Editor => "editor",
            Role::Approver => "approver",
            Role::Publisher => "publisher",
            Role::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == name)
    }

    /// Every role reads; admin holds everything.
    pub fn holds(self, permission: Permission) -> bool {
        match permission {
            Permission::Read => true,
            Permission::Draft => matches!(self, Role::Editor | Role::Admin),
            Permission::Approve => matches!(self, Role::Approver | Role::Admin),
            Permission::Publish => matches!(self, Role::Publisher | Role::Admin),
            Permission::Admin => self == Role::Admin,
            Permission::Root | Permission::KvRead | Permission::KvWrite => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Namespaces, entries, history, diffs, watches, change sets that touch them.
    Read,
    /// Create and edit change sets, submit, rebase.
    Draft,
    /// Approve or reject change sets.
    Approve,
    /// Publish approved change sets.
    Publish,
    /// Namespace settings, schema, grants, child namespaces, audit, emergency publish;
    /// on `/`: principals and tokens.
    Admin,
    /// Only the root principal.
    Root,
    /// Raw KV API reads of a key range (a KV grant, not a role).
    KvRead,
    /// Raw KV API writes of a key range (a KV grant, not a role).
    KvWrite,
}

impl Permission {
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Draft => "draft",
            Permission::Approve => "approve",
            Permission::Publish => "publish",
            Permission::Admin => "admin",
            Permission::Root => "root",
            Permission::KvRead => "kv_read",
            Permission::KvWrite => "kv_write",
        }
    }
}

/// A principal's roles, from the grants of a namespace and every namespace above it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles {
    pub root: bool,
    pub roles: std::collections::BTreeSet<Role>,
}

impl Roles {
    pub fn hold(&self, permission: Permission) -> bool {
        self.root || self.roles.iter().any(|role| role.holds(permission))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_holds_every_namespace_permission_and_nobody_holds_root() {
        for permission in [
            Permission::Read,
            Permission::Draft,
            Permission::Approve,
            Permission::Publish,
            Permission::Admin,
        ] {
            assert!(Role::Admin.holds(permission));
        }
        for role in Role::ALL {
            assert!(role.holds(Permission::Read));
            assert!(!role.holds(Permission::Root));
            assert_eq!(Role::parse(role.name()), Some(role));
        }
        assert!(!Role::Editor.holds(Permission::Approve));
        assert!(!Role::Approver.holds(Permission::Publish));
        assert!(!Role::Publisher.holds(Permission::Draft));
    }
}
