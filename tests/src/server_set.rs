//! Whole-server sets (`DB_NAME=*`) under test: a PostgreSQL server and a MySQL/MariaDB server
//! with several databases, roles or accounts, grants at every level and non-root definers, and a
//! strict comparer that reads a whole server class by class, so that a set restored onto a fresh
//! server can be held to "identical".
//!
//! PostgreSQL ([`pg_seed`], [`pg_snapshot`]): three databases owned by three non-superuser roles
//! (one of them NOLOGIN), a role hierarchy (a group role with comment, members with ADMIN, with
//! INHERIT FALSE and with SET FALSE, a NOINHERIT role, CREATEDB / CREATEROLE / CONNECTION LIMIT /
//! VALID UNTIL, SCRAM passwords and roles without one), role settings globally and in one
//! database, database settings, comments and connection limits, `REVOKE CONNECT … FROM PUBLIC`
//! with grants to roles (one WITH GRANT OPTION), and in the databases: objects owned by several
//! roles, grants on schemas, tables, columns, sequences, views and functions (one revoked from
//! PUBLIC, one SECURITY DEFINER), default privileges for two roles, a trigger, an identity
//! column, and the harness's `pg_sample` in `shop`.
//!
//! MySQL/MariaDB ([`mysql_seed`], [`mysql_accounts`]): `app_db` with part of the hard-case
//! dataset (`mysql_hard`: a view whose DEFINER is `report_owner`, routines whose DEFINER is
//! `app_user`, triggers, events, …) and `shop` with a view and a procedure whose DEFINER is
//! `writer`@`10.0.0.%`; accounts with database-, table-, column- and routine-level grants,
//! resource limits, a role granted and made default.
//!
//! A [`Snapshot`] is per class, per object, a text; [`diff`] names the class and object of every
//! difference. Objects that belong to one database start with `[<database>] `, so a restore of
//! some databases can be compared on those ([`Snapshot::only_databases`]).

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, Context, Result};

use crate::containers::{DbContainer, MysqlContainer};
use crate::mysql_hard::{self, short, text_difference, Flavor, Part};
use crate::pg_sample;

// ------------------------------------------------------------------------------------------
// The comparer.

/// A server (or part of one) as the comparer sees it: per class, per object, a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub classes: BTreeMap<String, BTreeMap<String, String>>,
}

impl Snapshot {
    pub fn insert(&mut self, class: &str, object: impl Into<String>, value: impl Into<String>) {
        self.classes
            .entry(class.to_string())
            .or_default()
            .insert(object.into(), value.into());
    }

    /// Adds every `[class, object, value]` of a JSON array (what the PostgreSQL queries return).
    fn extend_from_json(&mut self, json: &str) -> Result<()> {
        let rows: Option<Vec<(String, String, Option<String>)>> = serde_json::from_str(json.trim())
            .with_context(|| {
                format!(
                    "the snapshot query returned no JSON rows: {}",
                    json.chars().take(300).collect::<String>()
                )
            })?;
        for (class, object, value) in rows.unwrap_or_default() {
            self.insert(&class, object, value.unwrap_or_else(|| "NULL".into()));
        }
        Ok(())
    }

    pub fn get(&self, class: &str, object: &str) -> Option<&str> {
        self.classes.get(class)?.get(object).map(String::as_str)
    }

    /// The objects of one class.
    pub fn objects(&self, class: &str) -> Vec<&str> {
        self.classes
            .get(class)
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// How many objects there are, over all classes.
    pub fn len(&self) -> usize {
        self.classes.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The database an object belongs to (`[shop] table …` → `shop`), if any.
    pub fn database_of(object: &str) -> Option<&str> {
        let rest = object.strip_prefix('[')?;
        rest.split_once(']').map(|(db, _)| db)
    }

    /// The same snapshot with the objects of other databases left out (server-wide objects,
    /// such as roles, stay).
    pub fn only_databases(&self, keep: &[&str]) -> Snapshot {
        let mut out = self.clone();
        for objects in out.classes.values_mut() {
            objects.retain(|o, _| Self::database_of(o).is_none_or(|db| keep.contains(&db)));
        }
        out.classes.retain(|_, objects| !objects.is_empty());
        out
    }

    /// The same snapshot without one object.
    pub fn without(&self, class: &str, object: &str) -> Snapshot {
        let mut out = self.clone();
        if let Some(objects) = out.classes.get_mut(class) {
            objects.remove(object);
        }
        out
    }

    /// The databases the snapshot holds objects of, sorted.
    pub fn databases(&self) -> Vec<String> {
        let mut dbs: Vec<String> = self
            .classes
            .values()
            .flat_map(|objects| objects.keys())
            .filter_map(|o| Self::database_of(o).map(str::to_string))
            .collect();
        dbs.sort();
        dbs.dedup();
        dbs
    }
}

/// One difference between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub class: String,
    pub object: String,
    pub detail: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.class, self.object, self.detail)
    }
}

/// Every difference between `expected` and `actual`, by class and object.
pub fn diff(expected: &Snapshot, actual: &Snapshot) -> Vec<Difference> {
    let empty = BTreeMap::new();
    let mut classes: Vec<&String> = expected.classes.keys().collect();
    classes.extend(actual.classes.keys());
    classes.sort();
    classes.dedup();
    let mut out = Vec::new();
    for class in classes {
        let a = expected.classes.get(class).unwrap_or(&empty);
        let b = actual.classes.get(class).unwrap_or(&empty);
        let mut objects: Vec<&String> = a.keys().chain(b.keys()).collect();
        objects.sort();
        objects.dedup();
        for object in objects {
            let detail = match (a.get(object), b.get(object)) {
                (Some(x), Some(y)) if x == y => continue,
                (Some(x), None) => format!("missing (expected {})", short(x)),
                (None, Some(y)) => format!("unexpected ({})", short(y)),
                (Some(x), Some(y)) => text_difference(x, y),
                (None, None) => continue,
            };
            out.push(Difference {
                class: class.clone(),
                object: object.clone(),
                detail,
            });
        }
    }
    out
}

/// The classes that differ, once each.
pub fn classes(differences: &[Difference]) -> Vec<String> {
    let mut c: Vec<String> = differences.iter().map(|d| d.class.clone()).collect();
    c.dedup();
    c
}

/// The differences, one per line (at most 40), for an assertion message.
pub fn report(differences: &[Difference]) -> String {
    let mut text: Vec<String> = differences
        .iter()
        .take(40)
        .map(|d| format!("  {d}"))
        .collect();
    if differences.len() > 40 {
        text.push(format!("  … and {} more", differences.len() - 40));
    }
    format!("{} differences:\n{}", differences.len(), text.join("\n"))
}

// ------------------------------------------------------------------------------------------
// PostgreSQL.

/// The databases of the PostgreSQL set, besides `postgres` (which every server has).
pub const PG_DATABASES: [&str; 3] = ["audit", "inventory", "shop"];
/// The database holding `pg_sample`.
pub const PG_SAMPLE_DB: &str = "shop";
/// Roles created by [`PG_GLOBALS`], with their passwords where they have one.
pub const PG_ROLES: [(&str, Option<&str>); 8] = [
    ("alice", Some("alice-Pw-3")),
    ("app_owner", Some("owner-Pw-1")),
    ("app_reader", None),
    ("audit_owner", None),
    ("bob", Some("bob-Pw-4")),
    ("inv_owner", Some("inv-Pw-2")),
    ("ops", None),
    ("staff", None),
];

/// Roles, memberships, role settings, the databases with their owners, settings, comments and
/// database-level grants. Run as the superuser in `postgres`.
pub const PG_GLOBALS: &str = r#"
CREATE ROLE staff NOLOGIN;
COMMENT ON ROLE staff IS 'everyone on the shop team';
CREATE ROLE app_owner LOGIN CREATEDB PASSWORD 'owner-Pw-1';
CREATE ROLE inv_owner LOGIN PASSWORD 'inv-Pw-2' CONNECTION LIMIT 5 VALID UNTIL '2031-01-01 00:00:00+00';
CREATE ROLE audit_owner NOLOGIN;
CREATE ROLE alice LOGIN INHERIT PASSWORD 'alice-Pw-3';
CREATE ROLE bob LOGIN NOINHERIT PASSWORD 'bob-Pw-4';
CREATE ROLE app_reader LOGIN;
CREATE ROLE ops NOLOGIN CREATEROLE;
GRANT staff TO alice WITH ADMIN OPTION;
GRANT staff TO bob;
GRANT staff TO app_reader WITH INHERIT TRUE, SET FALSE;
GRANT app_owner TO ops WITH ADMIN TRUE, INHERIT FALSE;
GRANT inv_owner TO alice;
ALTER ROLE app_owner SET statement_timeout = '1min';
ALTER ROLE alice SET search_path = app, public;
CREATE DATABASE shop OWNER app_owner;
CREATE DATABASE inventory OWNER inv_owner;
CREATE DATABASE audit OWNER audit_owner CONNECTION LIMIT 10;
COMMENT ON DATABASE shop IS 'the shop, with its customers';
ALTER DATABASE shop SET work_mem = '8MB';
ALTER DATABASE inventory SET search_path = app, public;
ALTER DATABASE audit SET timezone = 'Europe/Berlin';
ALTER ROLE app_reader IN DATABASE shop SET statement_timeout = '5s';
REVOKE CONNECT, TEMPORARY ON DATABASE shop FROM PUBLIC;
GRANT CONNECT ON DATABASE shop TO staff;
GRANT CONNECT, TEMPORARY ON DATABASE shop TO app_reader;
REVOKE CONNECT ON DATABASE audit FROM PUBLIC;
GRANT CONNECT ON DATABASE audit TO alice WITH GRANT OPTION;
GRANT CREATE ON DATABASE inventory TO alice;
"#;

/// In `shop`, as its owner `app_owner`, after `pg_sample::SEED`.
const PG_SHOP: &str = r#"
GRANT USAGE ON SCHEMA public TO staff;
GRANT SELECT ON customers TO staff;
GRANT SELECT, INSERT ON orders TO alice;
GRANT UPDATE (note) ON orders TO bob;
GRANT USAGE, SELECT ON SEQUENCE invoice_seq TO app_reader;
REVOKE EXECUTE ON FUNCTION order_count(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION order_count(int) TO staff;
GRANT SELECT ON big_spenders TO app_reader WITH GRANT OPTION;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO app_reader;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
CREATE TABLE later (id int PRIMARY KEY, at date);
INSERT INTO later SELECT g, date '2026-01-01' + g FROM generate_series(1, 50) g;
"#;

/// In `inventory`: a schema of its owner with grants down to columns, a SECURITY DEFINER
/// function, and a table owned by a member role (`alice`) with default privileges of her own.
const PG_INVENTORY: &str = r#"
SET ROLE inv_owner;
CREATE SCHEMA app;
COMMENT ON SCHEMA app IS 'the inventory application';
CREATE TABLE app.items (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    qty int NOT NULL DEFAULT 0 CHECK (qty >= 0),
    price numeric(10, 2)
);
INSERT INTO app.items (name, qty, price)
SELECT 'item ' || g, g % 50, g * 0.25 FROM generate_series(1, 500) g;
CREATE VIEW app.low_stock AS SELECT id, name, qty FROM app.items WHERE qty < 5;
CREATE FUNCTION app.restock(item int, n int) RETURNS void LANGUAGE sql SECURITY DEFINER
    SET search_path = app AS $$ UPDATE app.items SET qty = qty + n WHERE id = item $$;
REVOKE ALL ON FUNCTION app.restock(int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.restock(int, int) TO staff;
GRANT USAGE ON SCHEMA app TO staff;
GRANT CREATE ON SCHEMA app TO alice;
GRANT SELECT, UPDATE (qty) ON app.items TO staff;
GRANT ALL ON SEQUENCE app.items_id_seq TO alice;
GRANT SELECT ON app.low_stock TO bob;
RESET ROLE;
SET ROLE alice;
CREATE TABLE app.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text);
INSERT INTO app.notes (body) SELECT 'note ' || g FROM generate_series(1, 100) g;
ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO bob;
RESET ROLE;
"#;

/// In `audit`, owned by a role that cannot log in: a table with a trigger, grants to a group
/// and to another database's owner.
const PG_AUDIT: &str = r#"
SET ROLE audit_owner;
CREATE TABLE events (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    kind text NOT NULL,
    payload jsonb
);
INSERT INTO events (at, kind, payload)
SELECT timestamptz '2026-01-01 00:00:00+00' + g * interval '1 hour',
       (ARRAY['login', 'logout', 'error'])[1 + g % 3], jsonb_build_object('n', g)
FROM generate_series(1, 1000) g;
CREATE FUNCTION events_guard() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'events are append-only'; END $$;
CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_guard();
GRANT SELECT ON events TO staff;
GRANT INSERT ON events TO app_owner;
GRANT USAGE ON SEQUENCE events_id_seq TO app_owner;
RESET ROLE;
"#;

/// Seeds the PostgreSQL server: [`PG_GLOBALS`], then each database as its owner.
pub async fn pg_seed(server: &DbContainer) -> Result<()> {
    server
        .psql("postgres", PG_GLOBALS)
        .await
        .context("creating the roles and databases")?;
    server
        .psql(
            "shop",
            &format!(
                "SET ROLE app_owner;\n{}\n{PG_SHOP}\nRESET ROLE;",
                pg_sample::SEED
            ),
        )
        .await
        .context("seeding shop")?;
    server
        .psql("inventory", PG_INVENTORY)
        .await
        .context("seeding inventory")?;
    server
        .psql("audit", PG_AUDIT)
        .await
        .context("seeding audit")?;
    Ok(())
}

/// An ACL column as sorted text (the order of an aclitem[] is not part of its meaning: a
/// restore may list the same grants in another order), or `default` when NULL.
fn acl(column: &str) -> String {
    format!(
        "coalesce((SELECT '{{' || string_agg(a::text, ',' ORDER BY a::text) || '}}' \
         FROM unnest({column}) a), 'default')"
    )
}

/// The server-wide classes, read in `postgres`: roles (every attribute), role passwords (the
/// SCRAM verifier's digest, or `none`; not for the roles in `skip_passwords`), role comments,
/// memberships (admin, inherit and set options, grantor), role settings (global and
/// per-database), database settings, databases (owner, tablespace, encoding, locale, connection
/// limit, comment, …) and their ACLs, tablespaces.
fn pg_globals_query(skip_passwords: &[&str]) -> String {
    let skip = skip_passwords
        .iter()
        .map(|r| format!("'{}'", r.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let datacl = acl("datacl");
    let spcacl = acl("spcacl");
    format!(
        r#"
SELECT json_agg(json_build_array(c, o, v) ORDER BY c, o) FROM (
  SELECT 'roles', 'role ' || rolname, (to_jsonb(a) - 'oid' - 'rolname' - 'rolpassword')::text
    FROM pg_authid a WHERE rolname !~ '^pg_'
  UNION ALL
  SELECT 'role_passwords', 'role ' || rolname,
         CASE WHEN rolpassword IS NULL THEN 'none'
              ELSE split_part(rolpassword, '$', 1) || ' ' || md5(rolpassword) END
    FROM pg_authid WHERE rolname !~ '^pg_' AND NOT (rolname = ANY (ARRAY[{skip}]::text[]))
  UNION ALL
  SELECT 'role_comments', 'role ' || rolname, shobj_description(oid, 'pg_authid')
    FROM pg_authid WHERE shobj_description(oid, 'pg_authid') IS NOT NULL
  UNION ALL
  SELECT 'memberships', 'role ' || pg_get_userbyid(m.member) || ' in ' || pg_get_userbyid(m.roleid),
         (to_jsonb(m) - 'oid' - 'roleid' - 'member' - 'grantor')::text
           || ' granted by ' || pg_get_userbyid(m.grantor)
    FROM pg_auth_members m WHERE pg_get_userbyid(m.member) !~ '^pg_'
  UNION ALL
  SELECT 'role_settings', coalesce('[' || d.datname || '] ', '') || 'role ' || pg_get_userbyid(s.setrole),
         s.setconfig::text
    FROM pg_db_role_setting s LEFT JOIN pg_database d ON d.oid = s.setdatabase
   WHERE s.setrole <> 0
  UNION ALL
  SELECT 'database_settings', '[' || d.datname || ']', s.setconfig::text
    FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE s.setrole = 0
  UNION ALL
  SELECT 'databases', '[' || datname || ']',
         'owner ' || pg_get_userbyid(datdba)
           || ', tablespace ' || (SELECT spcname FROM pg_tablespace t WHERE t.oid = d.dattablespace)
           || ', encoding ' || pg_encoding_to_char(encoding)
           || coalesce(', comment ' || shobj_description(oid, 'pg_database'), '')
           || ', ' || (to_jsonb(d) - 'oid' - 'datname' - 'datdba' - 'encoding' - 'dattablespace'
                       - 'datacl' - 'datfrozenxid' - 'datminmxid' - 'datlastsysoid')::text
    FROM pg_database d WHERE NOT datistemplate
  UNION ALL
  SELECT 'database_acl', '[' || datname || ']', {datacl} FROM pg_database WHERE NOT datistemplate
  UNION ALL
  SELECT 'tablespaces', 'tablespace ' || spcname,
         'owner ' || pg_get_userbyid(spcowner) || ', acl ' || {spcacl}
           || ', options ' || coalesce(spcoptions::text, 'none')
    FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')
) s(c, o, v);
"#
    )
}

/// The classes of one database, read in it, every object prefixed with `[<database>] `:
/// definitions (schemas with comments, relations with their columns, defaults, identity and
/// comments, indexes, constraints, views, functions, sequences with their state, triggers,
/// types), data (per table: row count and md5 over its rows in order), owners (schemas,
/// relations, functions, types), ACLs (schemas, relations, columns, functions, types) and
/// default privileges.
fn pg_database_query() -> String {
    let (nspacl, relacl, proacl, typacl, defaclacl) = (
        acl("nspacl"),
        acl("relacl"),
        acl("proacl"),
        acl("typacl"),
        acl("defaclacl"),
    );
    let attacl = acl("a.attacl");
    format!(
        r#"
WITH nsp AS (
  SELECT oid, nspname, nspowner, nspacl FROM pg_namespace
   WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
     AND nspname !~ '^pg_(toast_)?temp_'
), rel AS (
  SELECT c.oid, c.relkind, c.relowner, c.relacl, format('%I.%I', n.nspname, c.relname) AS q
    FROM pg_class c JOIN nsp n ON n.oid = c.relnamespace
), fn AS (
  SELECT p.oid, p.prokind, p.proowner, p.proacl,
         format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) AS q
    FROM pg_proc p JOIN nsp n ON n.oid = p.pronamespace
), typ AS (
  SELECT t.oid, t.typtype, t.typowner, t.typacl, format('%I.%I', n.nspname, t.typname) AS q
    FROM pg_type t JOIN nsp n ON n.oid = t.typnamespace WHERE t.typtype IN ('e', 'd', 'r', 'm')
)
SELECT json_agg(json_build_array(c, '[' || current_database() || '] ' || o, v) ORDER BY c, o) FROM (
  SELECT 'definitions', 'schema ' || nspname, coalesce(obj_description(oid, 'pg_namespace'), '')
    FROM nsp
  UNION ALL
  SELECT 'definitions', 'relation ' || q, relkind::text || ': ' || coalesce((
    SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod))
             || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
             || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
             || CASE WHEN a.attidentity <> ''::"char" THEN ' identity ' || a.attidentity::text ELSE '' END
             || CASE WHEN a.attgenerated <> ''::"char" THEN ' generated ' || a.attgenerated::text ELSE '' END,
           ', ' ORDER BY a.attnum)
      FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
         || coalesce(', comment ' || obj_description(oid, 'pg_class'), '')
    FROM rel WHERE relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  UNION ALL
  SELECT 'definitions', 'index ' || q, pg_get_indexdef(oid) FROM rel WHERE relkind IN ('i', 'I')
  UNION ALL
  SELECT 'definitions', 'constraint ' || coalesce(r.q, t.q) || ' ' || co.conname,
         pg_get_constraintdef(co.oid)
    FROM pg_constraint co LEFT JOIN rel r ON r.oid = co.conrelid LEFT JOIN typ t ON t.oid = co.contypid
   WHERE co.connamespace IN (SELECT oid FROM nsp)
  UNION ALL
  SELECT 'definitions', 'view ' || q, pg_get_viewdef(oid) FROM rel WHERE relkind IN ('v', 'm')
  UNION ALL
  SELECT 'definitions', 'function ' || q, pg_get_functiondef(oid) FROM fn WHERE prokind <> 'a'
  UNION ALL
  SELECT 'definitions', 'sequence ' || format('%I.%I', schemaname, sequencename),
         concat_ws(' ', data_type, start_value, min_value, max_value, increment_by, cycle,
                   cache_size, 'last ' || coalesce(last_value::text, 'unset'))
    FROM pg_sequences WHERE schemaname IN (SELECT nspname FROM nsp)
  UNION ALL
  SELECT 'definitions', 'trigger ' || r.q || ' ' || tg.tgname, pg_get_triggerdef(tg.oid)
    FROM pg_trigger tg JOIN rel r ON r.oid = tg.tgrelid WHERE NOT tg.tgisinternal
  UNION ALL
  SELECT 'definitions', 'type ' || q, typtype::text || ': ' || coalesce(
    (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = typ.oid),
    format_type(oid, NULL)) FROM typ
  UNION ALL
  SELECT 'data', 'table ' || q, (xpath('/row/x/text()', query_to_xml(format(
    'SELECT count(*) || '' '' || coalesce(md5(string_agg(t::text, ''|'' ORDER BY t::text)), ''-'') AS x FROM %s t',
    q), false, true, '')))[1]::text
    FROM rel WHERE relkind = 'r'
  UNION ALL
  SELECT 'owners', 'schema ' || nspname, pg_get_userbyid(nspowner) FROM nsp
  UNION ALL
  SELECT 'owners', 'relation ' || q, pg_get_userbyid(relowner) FROM rel
   WHERE relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  UNION ALL
  SELECT 'owners', 'function ' || q, pg_get_userbyid(proowner) FROM fn
  UNION ALL
  SELECT 'owners', 'type ' || q, pg_get_userbyid(typowner) FROM typ
  UNION ALL
  SELECT 'acl', 'schema ' || nspname, {nspacl} FROM nsp
  UNION ALL
  SELECT 'acl', 'relation ' || q, {relacl} FROM rel WHERE relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  UNION ALL
  SELECT 'acl', 'column ' || r.q || '.' || quote_ident(a.attname), {attacl}
    FROM pg_attribute a JOIN rel r ON r.oid = a.attrelid
   WHERE a.attacl IS NOT NULL AND NOT a.attisdropped
  UNION ALL
  SELECT 'acl', 'function ' || q, {proacl} FROM fn
  UNION ALL
  SELECT 'acl', 'type ' || q, {typacl} FROM typ
  UNION ALL
  SELECT 'default_acl', 'for role ' || pg_get_userbyid(defaclrole)
           || coalesce(' in schema ' || (SELECT nspname FROM pg_namespace WHERE oid = defaclnamespace), '')
           || ' on ' || defaclobjtype::text,
         {defaclacl}
    FROM pg_default_acl
) s(c, o, v);
"#
    )
}

/// The user databases of a server (not templates), sorted.
pub async fn pg_databases(server: &DbContainer) -> Result<Vec<String>> {
    let out = server
        .psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname;",
        )
        .await?;
    Ok(out.lines().map(str::to_string).collect())
}

/// The whole server as the comparer sees it: the server-wide classes, then every database's
/// (`pg_sample`'s fingerprint too, for [`PG_SAMPLE_DB`]). `skip_passwords`: roles whose
/// password is not compared (the bootstrap superuser, whose password each container sets).
pub async fn pg_snapshot(server: &DbContainer, skip_passwords: &[&str]) -> Result<Snapshot> {
    let mut snap = Snapshot::default();
    let globals = server
        .psql("postgres", &pg_globals_query(skip_passwords))
        .await
        .context("reading the server's roles and databases")?;
    snap.extend_from_json(&globals)?;
    let query = pg_database_query();
    for db in pg_databases(server).await? {
        let rows = server
            .psql(&db, &query)
            .await
            .with_context(|| format!("reading database {db}"))?;
        snap.extend_from_json(&rows)?;
        if db == PG_SAMPLE_DB {
            let fp = server.psql(&db, pg_sample::FINGERPRINT).await?;
            snap.insert("pg_sample", format!("[{db}] fingerprint"), fp);
        }
    }
    Ok(snap)
}

// ------------------------------------------------------------------------------------------
// MySQL and MariaDB.

/// The hard-case parts seeded into `app_db`: the definers (views, routines), triggers, events,
/// counters, exact values; not the big row and the 200,000 rows (the fidelity suite has them),
/// nor the parts that only warn (MyISAM, spatial reference systems).
pub const MYSQL_APP_PARTS: [Part; 17] = [
    Part::Text,
    Part::Bytes,
    Part::Numbers,
    Part::Floats,
    Part::Temporal,
    Part::Choices,
    Part::Json,
    Part::Generated,
    Part::ForeignKeys,
    Part::Counters,
    Part::Identifiers,
    Part::Triggers,
    Part::Routines,
    Part::Events,
    Part::Views,
    Part::Sequences,
    Part::History,
];
/// The databases of the MySQL/MariaDB set.
pub const MYSQL_DATABASES: [&str; 2] = [MysqlContainer::APP_DB, "shop"];
/// The accounts created by [`mysql_accounts_sql`], besides `app_user` and `report_owner`.
pub const MYSQL_READER: &str = "'reader'@'%'";
pub const MYSQL_READER_PASSWORD: &str = "Reader-Pw-1";
pub const MYSQL_WRITER: &str = "'writer'@'10.0.0.%'";

/// The second database, `shop`, and the accounts: a role (`analyst`, database-level SELECT)
/// granted to `reader` and made its default, `reader` with table-, column- and routine-level
/// grants, `writer` (a host pattern, resource limits, database-level grants) who is the DEFINER
/// of a view and a procedure. Run as root after `app_db` is seeded.
pub fn mysql_accounts_sql(flavor: Flavor) -> String {
    let default_role = match flavor {
        Flavor::Mariadb => "SET DEFAULT ROLE analyst FOR 'reader'@'%';",
        Flavor::Mysql => "SET DEFAULT ROLE analyst TO 'reader'@'%';",
    };
    format!(
        r#"
CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, qty INT NOT NULL DEFAULT 0);
INSERT INTO shop.items VALUES (1, 'apple', 5), (2, 'pear', 0), (3, 'plum', 12);
CREATE TABLE shop.orders (
    id INT AUTO_INCREMENT PRIMARY KEY, item_id INT NOT NULL, n INT NOT NULL,
    FOREIGN KEY (item_id) REFERENCES shop.items (id)
);
INSERT INTO shop.orders (item_id, n) VALUES (1, 2), (3, 1), (1, 7);
CREATE USER 'reader'@'%' IDENTIFIED BY '{MYSQL_READER_PASSWORD}';
CREATE USER 'writer'@'10.0.0.%' IDENTIFIED BY 'Writer-Pw-2'
    WITH MAX_QUERIES_PER_HOUR 500 MAX_USER_CONNECTIONS 3;
CREATE ROLE analyst;
GRANT SELECT ON shop.* TO analyst;
GRANT SELECT, INSERT, UPDATE, DELETE, EXECUTE ON shop.* TO 'writer'@'10.0.0.%';
GRANT SELECT ON shop.orders TO 'reader'@'%';
GRANT SELECT (id, name), UPDATE (name) ON shop.items TO 'reader'@'%';
GRANT analyst TO 'reader'@'%';
{default_role}
CREATE DEFINER = 'writer'@'10.0.0.%' SQL SECURITY DEFINER VIEW shop.stock AS
    SELECT name, qty FROM shop.items WHERE qty > 0;
CREATE DEFINER = 'writer'@'10.0.0.%' PROCEDURE shop.restock (IN item INT, IN k INT)
    MODIFIES SQL DATA UPDATE shop.items SET qty = qty + k WHERE id = item;
GRANT EXECUTE ON PROCEDURE shop.restock TO 'reader'@'%';
"#
    )
}

/// Seeds the server: `app_db` with [`MYSQL_APP_PARTS`] (and `report_owner`), then
/// [`mysql_accounts_sql`].
pub async fn mysql_seed(server: &MysqlContainer, flavor: Flavor) -> Result<()> {
    mysql_hard::seed(server, flavor, MysqlContainer::APP_DB, &MYSQL_APP_PARTS).await?;
    server
        .root("", &mysql_accounts_sql(flavor))
        .await
        .context("creating shop and the accounts")?;
    Ok(())
}

/// Accounts the comparer leaves out: the server's own.
fn system_account(user: &str) -> bool {
    user.is_empty() || user == "root" || user == "mariadb.sys" || user.starts_with("mysql.")
}

/// A grant line with the column lists of column privileges sorted: MariaDB prints
/// `SELECT (`name`, `id`)` in the order of its hash of the columns, which the same grant made
/// on another server need not share.
fn sorted_columns(grant: &str) -> String {
    let (privileges, rest) = match grant.find(" ON ") {
        Some(at) => grant.split_at(at),
        None => return grant.to_string(),
    };
    let mut out = String::with_capacity(grant.len());
    let mut chars = privileges.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '(' {
            let inner: String = chars.by_ref().take_while(|&c| c != ')').collect();
            let mut columns: Vec<&str> = inner.split(", ").collect();
            columns.sort();
            out.push_str(&columns.join(", "));
            out.push(')');
        }
    }
    out.push_str(rest);
    out
}

/// Every non-system account and role: `accounts` holds its `SHOW CREATE USER` (not for MariaDB
/// roles, which have none; MySQL prints the password hash as hex), `grants` its `SHOW GRANTS`,
/// one grant per line, sorted (their order is not part of their meaning), with the columns of
/// column privileges sorted too ([`sorted_columns`]).
pub async fn mysql_accounts(server: &MysqlContainer, flavor: Flavor) -> Result<Snapshot> {
    let list = match flavor {
        Flavor::Mariadb => "SELECT user, host, is_role FROM mysql.user ORDER BY user, host",
        Flavor::Mysql => "SELECT user, host, 'N' FROM mysql.user ORDER BY user, host",
    };
    let out = server.root("", list).await.context("listing accounts")?;
    let mut script = String::new();
    if flavor == Flavor::Mysql {
        script.push_str("SET SESSION print_identified_with_as_hex = ON;\n");
    }
    let mut accounts = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [user, host, is_role] = f[..] else {
            bail!("unexpected account row {line:?}");
        };
        if system_account(user) {
            continue;
        }
        // A MariaDB role has no host: it is named alone.
        let (account, name) = if is_role == "Y" {
            (mysql_hard::literal(user), user.to_string())
        } else {
            (
                format!(
                    "{}@{}",
                    mysql_hard::literal(user),
                    mysql_hard::literal(host)
                ),
                format!("{user}@{host}"),
            )
        };
        if is_role != "Y" {
            script.push_str(&format!(
                "SELECT '@@ accounts {name}';\nSHOW CREATE USER {account};\n"
            ));
        }
        script.push_str(&format!(
            "SELECT '@@ grants {name}';\nSHOW GRANTS FOR {account};\n"
        ));
        accounts.push(name);
    }
    let mut snap = Snapshot::default();
    if accounts.is_empty() {
        return Ok(snap);
    }
    let out = server
        .root("", &script)
        .await
        .context("reading the accounts")?;
    let mut current: Option<(String, String)> = None;
    let mut lines: Vec<String> = Vec::new();
    let mut flush = |current: &Option<(String, String)>, lines: &mut Vec<String>| {
        if let Some((class, name)) = current {
            lines.sort();
            snap.insert(class, name.clone(), lines.join("\n"));
        }
        lines.clear();
    };
    for line in out.lines() {
        if let Some(header) = line.strip_prefix("@@ ") {
            flush(&current, &mut lines);
            let (class, name) = header.split_once(' ').unwrap_or((header, ""));
            current = Some((class.to_string(), name.to_string()));
        } else {
            lines.push(sorted_columns(line));
        }
    }
    flush(&current, &mut lines);
    Ok(snap)
}

/// The user databases of a MySQL/MariaDB server, sorted.
pub async fn mysql_databases(server: &MysqlContainer) -> Result<Vec<String>> {
    let out = server
        .root(
            "",
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN \
             ('mysql', 'sys', 'information_schema', 'performance_schema') ORDER BY schema_name",
        )
        .await?;
    Ok(out.lines().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(rows: &[(&str, &str, &str)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (c, o, v) in rows {
            s.insert(c, *o, *v);
        }
        s
    }

    #[test]
    fn every_difference_is_named_by_class_and_object() {
        let source = snapshot(&[
            ("roles", "role bob", r#"{"rolinherit": false}"#),
            (
                "acl",
                "[shop] relation public.customers",
                "{staff=r/app_owner}",
            ),
            ("database_acl", "[shop]", "{app_owner=CTc/app_owner}"),
            (
                "definitions",
                "[shop] view public.v",
                " SELECT 1\n  FROM t;",
            ),
            ("memberships", "role bob in staff", "inherit false"),
        ]);
        assert!(diff(&source, &source.clone()).is_empty());
        let restored = snapshot(&[
            ("roles", "role bob", r#"{"rolinherit": true}"#),
            (
                "acl",
                "[shop] relation public.customers",
                "{bob=a/app_owner,staff=r/app_owner}",
            ),
            ("database_acl", "[shop]", "{app_owner=CTc/app_owner}"),
            (
                "definitions",
                "[shop] view public.v",
                " SELECT 1\n  FROM u;",
            ),
            ("owners", "[shop] relation public.t", "postgres"),
        ]);
        let d = diff(&source, &restored);
        let named: Vec<(String, String)> = d
            .iter()
            .map(|d| (d.class.clone(), d.object.clone()))
            .collect();
        assert_eq!(
            named,
            [
                ("acl".into(), "[shop] relation public.customers".into()),
                ("definitions".into(), "[shop] view public.v".into()),
                ("memberships".into(), "role bob in staff".into()),
                ("owners".into(), "[shop] relation public.t".into()),
                ("roles".into(), "role bob".into()),
            ]
        );
        assert!(d[1].detail.starts_with("line 2 of 2"), "{}", d[1]);
        assert!(d[2].detail.starts_with("missing"), "{}", d[2]);
        assert!(d[3].detail.starts_with("unexpected"), "{}", d[3]);
        assert_eq!(
            classes(&d),
            ["acl", "definitions", "memberships", "owners", "roles"]
        );
        assert!(report(&d).starts_with("5 differences:\n  [acl] [shop] relation"));
    }

    #[test]
    fn objects_of_other_databases_can_be_left_out() {
        let s = snapshot(&[
            ("roles", "role bob", "x"),
            ("databases", "[shop]", "owner app_owner"),
            ("databases", "[audit]", "owner audit_owner"),
            ("acl", "[audit] relation public.events", "y"),
        ]);
        assert_eq!(s.databases(), ["audit", "shop"]);
        let only = s.only_databases(&["shop"]);
        assert_eq!(only.databases(), ["shop"]);
        assert_eq!(only.objects("roles"), ["role bob"]);
        assert!(!only.classes.contains_key("acl"));
        assert_eq!(Snapshot::database_of("[shop] x"), Some("shop"));
        assert_eq!(Snapshot::database_of("role bob"), None);
        assert_eq!(s.without("roles", "role bob").objects("roles").len(), 0);
    }

    #[test]
    fn snapshot_rows_come_from_json_with_nulls() {
        let mut s = Snapshot::default();
        s.extend_from_json(r#"[["a", "[db] x", "1"], ["a", "y", null]]"#)
            .unwrap();
        assert_eq!(s.get("a", "[db] x"), Some("1"));
        assert_eq!(s.get("a", "y"), Some("NULL"));
        let mut empty = Snapshot::default();
        empty.extend_from_json("\n").unwrap_err();
        empty.extend_from_json("null").unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn column_lists_of_grants_are_sorted() {
        assert_eq!(
            sorted_columns(
                "GRANT SELECT (`name`, `id`), UPDATE (`name`) ON `shop`.`items` TO `r`@`%`"
            ),
            "GRANT SELECT (`id`, `name`), UPDATE (`name`) ON `shop`.`items` TO `r`@`%`"
        );
        let plain = "GRANT USAGE ON *.* TO `r`@`%` IDENTIFIED BY PASSWORD '*AB(C'";
        assert_eq!(sorted_columns(plain), plain);
        assert_eq!(
            sorted_columns("SET DEFAULT ROLE `a` FOR `r`@`%`"),
            "SET DEFAULT ROLE `a` FOR `r`@`%`"
        );
    }

    #[test]
    fn system_accounts_are_left_out() {
        for user in ["root", "mysql.sys", "mysql.session", "mariadb.sys", ""] {
            assert!(system_account(user), "{user}");
        }
        for user in ["app_user", "reader", "analyst", "rooted"] {
            assert!(!system_account(user), "{user}");
        }
    }
}
