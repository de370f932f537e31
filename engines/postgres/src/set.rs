//! Whole-server backups (`DB_NAME=*`) on PostgreSQL: the databases to back up, the globals
//! (`pg_dumpall --globals-only`) and their replay, and where each database of a set is
//! restored.
//!
//! A database of a set is restored with `pg_restore --create` from the maintenance database, so
//! that what belongs to the database itself comes back as it was: owner, encoding and locale,
//! `ALTER DATABASE … SET`, `ALTER ROLE … IN DATABASE … SET`, its grants and comment (a custom
//! archive always holds them; only `--create` restores them). The maintenance database itself
//! cannot be dropped while connected to it: it is restored in place, as a single database is.

use runner_core::engine::{DatabaseList, Dump, Globals, GlobalsRestored};
use runner_core::env::Problem;
use runner_core::{ConfigError, DbConfig, Error, Manifest, ServerInfo};

use crate::globals::{self, Target};
use crate::version::major_of;
use crate::{classify, commands, Postgres};

/// The databases a set covers: connectable and not templates, by name. Names travel in hex so
/// that any character survives psql's output.
const LIST_QUERY: &str = "SELECT encode(convert_to(datname, 'UTF8'), 'hex'), \
    has_database_privilege(oid, 'CONNECT'), datconnlimit = -2 \
    FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname;\n";

/// Whether the account reads role passwords (pg_dumpall reads `pg_authid` for them).
const PASSWORDS_QUERY: &str =
    "SELECT rolsuper OR has_table_privilege('pg_catalog.pg_authid', 'SELECT') \
    FROM pg_roles WHERE rolname = current_user;\n";

/// The target's roles and tablespaces (in the server's encoding, as the script names them) and
/// what the restoring role may do.
const TARGET_QUERY: &str =
    "SELECT 'me', encode(convert_to(rolname, getdatabaseencoding()), 'hex'), \
      rolsuper, rolreplication, rolbypassrls, rolcreatedb, rolcreaterole \
      FROM pg_roles WHERE rolname = current_user \
    UNION ALL SELECT 'role', encode(convert_to(rolname, getdatabaseencoding()), 'hex'), \
      NULL, NULL, NULL, NULL, NULL FROM pg_roles \
    UNION ALL SELECT 'tablespace', encode(convert_to(spcname, getdatabaseencoding()), 'hex'), \
      NULL, NULL, NULL, NULL, NULL FROM pg_tablespace;\n";

/// Whether a set's database exists on the target and whether the restoring role may drop and
/// create it; the owner's name last (it may hold the separator).
const MEMBER_TARGET_QUERY: &str = "SELECT r.rolsuper OR r.rolcreatedb, d.oid IS NOT NULL, \
    COALESCE(r.rolsuper OR pg_has_role(d.datdba, 'MEMBER'), false), \
    COALESCE(pg_get_userbyid(d.datdba), '') \
    FROM pg_roles r LEFT JOIN pg_database d ON d.datname = :'target' \
    WHERE r.rolname = current_user;\n";

/// What a database holds beyond what a new database has: relations, routines, types, schemas
/// but `public`, extensions but plpgsql. Stricter than the single-database check, because a
/// set's database that holds nothing is dropped and created again.
const MEMBER_OBJECTS_QUERY: &str = "SELECT \
    (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
      WHERE c.relkind IN ('r','p','v','m','S','f','c') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
        AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%') \
    + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')) \
    + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
      WHERE t.typtype IN ('d','e','r','m') AND n.nspname NOT IN ('pg_catalog', 'information_schema')) \
    + (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema') \
        AND nspname NOT LIKE 'pg\\_%') \
    + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql');\n";

fn unexpected(out: &str) -> Error {
    Error::Internal(format!("unexpected answer from the server: {out:?}"))
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn flag(field: &str) -> Option<bool> {
    match field {
        "t" => Some(true),
        "f" => Some(false),
        _ => None,
    }
}

/// The sentence for a database left out because the account may not connect to it.
fn no_connect(name: &str) -> String {
    format!(
        "database \"{name}\": DB_USERNAME has no CONNECT privilege on it, so it is not in the backup"
    )
}

pub(crate) fn parse_database_list(out: &str) -> Result<DatabaseList, Error> {
    let mut list = DatabaseList::default();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.trim().split('|').collect();
        let [hex, connect, invalid] = fields[..] else {
            return Err(unexpected(out));
        };
        let name = unhex(hex)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| unexpected(out))?;
        match (flag(connect), flag(invalid)) {
            (_, Some(true)) => list.skipped.push(format!(
                "database \"{name}\": it is invalid (an interrupted DROP DATABASE left it) and cannot be connected to, so it is not in the backup"
            )),
            (Some(true), Some(false)) => list.databases.push(name),
            (Some(false), Some(false)) => list.skipped.push(no_connect(&name)),
            _ => return Err(unexpected(out)),
        }
    }
    Ok(list)
}

pub(crate) fn parse_target(out: &str, server_major: u32) -> Result<Target, Error> {
    let mut target = Target::default();
    let mut me = None;
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.trim().split('|').collect();
        let [kind, hex, ref attributes @ ..] = fields[..] else {
            return Err(unexpected(out));
        };
        let name = unhex(hex).ok_or_else(|| unexpected(out))?;
        match kind {
            "me" => {
                let has: Vec<bool> = attributes.iter().filter_map(|a| flag(a)).collect();
                let [sup, repl, bypass, createdb, createrole] = has[..] else {
                    return Err(unexpected(out));
                };
                target.superuser = sup;
                // Before 16 a CREATEROLE role sets CREATEDB and CREATEROLE only; from 16 it
                // sets the attributes it has itself (SUPERUSER never).
                let modern = server_major >= 16;
                for (name, may) in [
                    ("REPLICATION", modern && repl),
                    ("BYPASSRLS", modern && bypass),
                    ("CREATEDB", !modern || createdb),
                    ("CREATEROLE", !modern || createrole),
                ] {
                    if may {
                        target.may_set.push(name);
                    }
                }
                me = Some(name);
            }
            "role" => {
                target.roles.insert(name);
            }
            "tablespace" => {
                target.tablespaces.insert(name);
            }
            _ => return Err(unexpected(out)),
        }
    }
    target.current_user = me.ok_or_else(|| unexpected(out))?;
    Ok(target)
}

/// Where a set's database stands on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MemberTarget {
    /// The maintenance database: restored in place, as a single database.
    Maintenance { objects: u64 },
    /// Missing: pg_restore creates it.
    Missing,
    /// Exists; pg_restore drops it and creates it again (it is empty, or RESTORE_CLEAN is set).
    Replaced { objects: u64 },
}

struct MemberRow {
    may_create: bool,
    exists: bool,
    may_drop: bool,
    owner: String,
}

fn parse_member_row(out: &str) -> Result<MemberRow, Error> {
    let line = out.trim();
    let mut fields = line.splitn(4, '|');
    let mut next_flag = || fields.next().and_then(flag);
    let (Some(may_create), Some(exists), Some(may_drop)) = (next_flag(), next_flag(), next_flag())
    else {
        return Err(unexpected(out));
    };
    let owner = line.splitn(4, '|').nth(3).unwrap_or("").to_string();
    Ok(MemberRow {
        may_create,
        exists,
        may_drop,
        owner,
    })
}

pub(crate) fn objects_text(n: u64) -> String {
    if n == 1 {
        "1 object".into()
    } else {
        format!("{n} objects")
    }
}

fn refused_without_clean(name: &str, objects: u64) -> Error {
    Error::Config(ConfigError {
        problems: vec![Problem {
            var: "RESTORE_CLEAN".into(),
            message: format!(
                "the target database {name:?} already holds {}: restore into a server without it, drop it first, or set RESTORE_CLEAN=true to drop it and create it again from the backup",
                objects_text(objects)
            ),
        }],
    })
}

impl Postgres {
    pub(crate) fn is_maintenance(&self, db: &DbConfig) -> bool {
        db.name == self.options.maintenance_db
    }

    pub(crate) async fn list_databases_of(&self, db: &DbConfig) -> Result<DatabaseList, Error> {
        let out = commands::psql(db, &self.options.maintenance_db, &[])?
            .output(LIST_QUERY.as_bytes())
            .await
            .map_err(classify)?;
        parse_database_list(&out)
    }

    pub(crate) async fn dump_globals_of(&self, db: &DbConfig) -> Result<Globals, Error> {
        let maintenance = &self.options.maintenance_db;
        let out = commands::psql(db, maintenance, &[])?
            .output(PASSWORDS_QUERY.as_bytes())
            .await
            .map_err(classify)?;
        let passwords = flag(out.trim()).ok_or_else(|| unexpected(&out))?;
        let mut skipped = Vec::new();
        if !passwords {
            skipped.push(globals::NO_PASSWORDS.to_string());
        }
        let command = commands::pg_dumpall_globals(db, maintenance, passwords)?;
        Ok(Globals {
            dump: Dump::of_command(command)?,
            format: globals::FORMAT,
            skipped,
        })
    }

    /// Where a set's database stands on the target; refuses, without writing, what the restore
    /// may not do.
    pub(crate) async fn member_target(&self, db: &DbConfig) -> Result<MemberTarget, Error> {
        if self.is_maintenance(db) {
            let target = self.query_server(db, &db.name).await?;
            if target.objects > 0 && !self.options.clean {
                return Err(refused_without_clean(&db.name, target.objects));
            }
            return Ok(MemberTarget::Maintenance {
                objects: target.objects,
            });
        }
        let out = commands::psql(db, &self.options.maintenance_db, &[("target", &db.name)])?
            .output(MEMBER_TARGET_QUERY.as_bytes())
            .await
            .map_err(classify)?;
        let row = parse_member_row(&out)?;
        if !row.may_create {
            return Err(Error::DbRefused(format!(
                "DB_USERNAME may not create databases (it is neither a superuser nor CREATEDB), and database {:?} of the set is restored by creating it: restore as a role that may",
                db.name
            )));
        }
        if !row.exists {
            return Ok(MemberTarget::Missing);
        }
        let out = commands::psql(db, &db.name, &[])?
            .output(MEMBER_OBJECTS_QUERY.as_bytes())
            .await
            .map_err(classify)?;
        let objects: u64 = out.trim().parse().map_err(|_| unexpected(&out))?;
        if objects > 0 && !self.options.clean {
            return Err(refused_without_clean(&db.name, objects));
        }
        if !row.may_drop {
            return Err(Error::DbRefused(format!(
                "database {:?} exists on the target and belongs to {:?}: DB_USERNAME may not drop it to create it again from the backup; drop it first, or restore as its owner or a superuser",
                db.name, row.owner
            )));
        }
        Ok(MemberTarget::Replaced { objects })
    }

    /// Runs a part of the globals script through psql (ON_ERROR_STOP) on the maintenance
    /// database; a failure names what happened, without the passwords it may quote.
    async fn replay_script(
        &self,
        db: &DbConfig,
        script: &[u8],
        part: &str,
        explain: impl FnOnce(&str) -> String,
    ) -> Result<(), Error> {
        commands::psql(db, &self.options.maintenance_db, &[])?
            .output(script)
            .await
            .map(|_| ())
            .map_err(|failure| {
                let detail = globals::redact_passwords(&failure.stderr);
                let connection = [
                    "connection to server",
                    "could not connect",
                    "timeout expired",
                ]
                .iter()
                .any(|s| detail.contains(s));
                if connection {
                    return classify(runner_core::tool::ToolFailure {
                        stderr: detail,
                        ..failure
                    });
                }
                Error::Tool {
                    tool: format!("psql ({part} of the globals)"),
                    status: failure.status,
                    detail: explain(&detail),
                }
            })
    }

    pub(crate) async fn restore_globals_of(
        &self,
        db: &DbConfig,
        server: &ServerInfo,
        manifest: &Manifest,
        script: Vec<u8>,
    ) -> Result<GlobalsRestored, Error> {
        let maintenance = &self.options.maintenance_db;
        let out = commands::psql(db, maintenance, &[])?
            .output(TARGET_QUERY.as_bytes())
            .await
            .map_err(classify)?;
        let major = major_of(&server.server_version).unwrap_or(0);
        let target = parse_target(&out, major)?;
        let replay = globals::replay(&script, &target);
        drop(script);
        if !replay.refused.is_empty() {
            return Err(Error::Integrity(format!(
                "the set's globals script holds psql meta-commands that pg_dumpall --globals-only never writes, so it was not run and nothing was restored: {}",
                replay
                    .refused
                    .iter()
                    .map(|l| format!("{:?}", globals::redact_passwords(l)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut warnings = replay.warnings;
        if !replay.tablespaces_kept.is_empty() {
            warnings.push(format!(
                "tablespaces already on the target, kept as they are: {}",
                replay.tablespaces_kept.join(", ")
            ));
        }
        if !replay.tablespaces_created.is_empty() {
            tracing::info!(
                phase = "restore",
                "creating tablespaces {} (their directories must exist on the target server)",
                replay.tablespaces_created.join(", ")
            );
        }
        if !replay.without_password.is_empty() && globals::backed_up_without_passwords(manifest) {
            warnings.push(format!(
                "roles that may log in are created without a password, because the backup holds none: {}; set them (ALTER ROLE … PASSWORD) before they are used",
                replay.without_password.join(", ")
            ));
        }
        tracing::info!(
            phase = "restore",
            "restoring the server's roles and tablespaces: {} to create, {} already on the target",
            replay.created.len() + replay.tablespaces_created.len(),
            replay.kept.len() + replay.tablespaces_kept.len()
        );
        let not_superuser = if target.superuser {
            ""
        } else {
            "\nhint: DB_USERNAME is not a superuser on the target, and the backup's roles need what only a superuser (or a role holding that privilege with ADMIN or GRANT OPTION) may give: restore as a superuser, or set RESTORE_GLOBALS=false and create the roles first"
        };
        self.replay_script(db, &replay.roles_script, "roles", |detail| {
            let hint = if detail.contains("permission denied") { not_superuser } else { "" };
            format!("{detail}{hint}\nthe roles are created in one transaction, so none of them was; no database was restored")
        })
        .await?;
        if let Some(script) = &replay.tablespaces_script {
            self.replay_script(db, script, "tablespaces", |detail| {
                let hint = if detail.contains("permission denied") {
                    "\nhint: only a superuser may create a tablespace: create it on the target first (a tablespace that exists is kept as it is), or restore as a superuser"
                } else {
                    "\nhint: a tablespace's directory must exist on the target server, empty and owned by the server's user; create it, or create the tablespace first (a tablespace that exists is kept as it is)"
                };
                format!("{detail}{hint}\nthe roles were restored, the tablespaces not all; no database was restored")
            })
            .await?;
        }
        Ok(GlobalsRestored {
            kept: replay.kept,
            created: replay.created,
            warnings,
        })
    }
}

/// The hex form the queries return, for tests.
#[cfg(test)]
fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_are_listed_and_the_unreachable_named() {
        let out = format!(
            "{}|t|f\n{}|f|f\n{}|t|f\n{}|t|t\n",
            hex("Odd|db\nx"),
            hex("noconn"),
            hex("postgres"),
            hex("half_dropped")
        );
        let list = parse_database_list(&out).unwrap();
        assert_eq!(list.databases, ["Odd|db\nx", "postgres"]);
        assert_eq!(
            list.skipped,
            [
                "database \"noconn\": DB_USERNAME has no CONNECT privilege on it, so it is not in the backup",
                "database \"half_dropped\": it is invalid (an interrupted DROP DATABASE left it) and cannot be connected to, so it is not in the backup"
            ]
        );
        assert!(parse_database_list("zz|t|f").is_err());
        assert!(parse_database_list("").unwrap().databases.is_empty());
    }

    #[test]
    fn the_target_is_read() {
        let out = format!(
            "me|{}|f|t|f|f|t\nrole|{}|||||\nrole|{}|||||\ntablespace|{}|||||\n",
            hex("admin"),
            hex("admin"),
            hex("Mixed Case"),
            hex("pg_default")
        );
        let t = parse_target(&out, 16).unwrap();
        assert_eq!(t.current_user, b"admin");
        assert!(!t.superuser);
        assert_eq!(t.may_set, ["REPLICATION", "CREATEROLE"]);
        assert!(t.roles.contains(b"Mixed Case".as_slice()));
        assert!(t.tablespaces.contains(b"pg_default".as_slice()));
        let t = parse_target(&out, 15).unwrap();
        assert_eq!(t.may_set, ["CREATEDB", "CREATEROLE"]);
        assert!(parse_target("role|00|||||", 17).is_err(), "no current user");
    }

    #[test]
    fn member_rows_are_read() {
        let r = parse_member_row("t|t|f|Owner|with pipe\n").unwrap();
        assert!(r.may_create && r.exists && !r.may_drop);
        assert_eq!(r.owner, "Owner|with pipe");
        let r = parse_member_row("t|f|f|\n").unwrap();
        assert!(!r.exists && r.owner.is_empty());
        assert!(parse_member_row("x").is_err());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex("a\"b")).unwrap(), b"a\"b");
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
