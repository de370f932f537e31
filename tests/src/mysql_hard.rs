//! A hard-case MySQL/MariaDB database and a strict comparer for it.
//!
//! The dataset ([`scripts`]) holds what logical dumps are known to get wrong: 4-byte and legacy
//! character sets, every byte value, DECIMAL(65,30) and integer limits, FLOAT/DOUBLE edge values
//! (maximums, denormals, negative zero), zero dates, TIMESTAMPs in the Europe/Berlin DST fold,
//! TIME limits, the ENUM error value, JSON edge cases, generated and invisible columns, composite
//! and circular foreign keys, sub-partitions, FULLTEXT, spatial data with an SRID, AUTO_INCREMENT
//! gaps, odd identifiers, MyISAM (and Aria), ordered triggers, a routine created under a
//! non-default sql_mode, an event created in another session time zone, definers other than the
//! dumping account, a 22 MB LONGBLOB and 200,000 ordinary rows; on MariaDB also sequences (one
//! that has cycled), a `DEFAULT NEXTVAL(...)` column and a system-versioned table with history.
//! The database itself has a non-default collation.
//!
//! [`fingerprint`] reads a database as root into classes ([`Class`]) and [`diff`] names the
//! class and object of every difference. Rows are read with a lossless expression per type
//! ([`value_expr`]) and kept as a count, a sha256 and a short digest per row (enough to name the
//! first differing row without holding 200,000 rows as text).

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::containers::MysqlContainer;
use crate::matrix::Cell;

/// The server's product: what SQL it accepts and what the comparer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Mariadb,
    Mysql,
}

impl Flavor {
    pub fn of(cell: &Cell) -> Flavor {
        if cell.product() == "mariadb" {
            Flavor::Mariadb
        } else {
            Flavor::Mysql
        }
    }
}

/// The server options of every server in the hard-case scenarios.
pub const SERVER_ARGS: [&str; 2] = [
    "--default-time-zone=Europe/Berlin",
    "--max-allowed-packet=64M",
];
/// The database's default character set and collation (not the server's).
pub const DB_CHARSET: &str = "utf8mb4";
pub const DB_COLLATION: &str = "utf8mb4_unicode_520_ci";
/// The account that owns the view: it exists on the source, not necessarily on a target.
pub const REPORT_OWNER: &str = "report_owner";
/// The big row's length: 5.5 million times 4 bytes.
pub const BIG_ROW_BYTES: u64 = 22_000_000;
/// Rows in the `bulk` table.
pub const BULK_ROWS: u64 = 200_000;

/// A group of objects in the dataset; scenarios that need only some of them seed those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Text,
    Bytes,
    Numbers,
    Floats,
    Temporal,
    Choices,
    Json,
    Generated,
    ForeignKeys,
    Partitions,
    Fulltext,
    Spatial,
    Counters,
    Identifiers,
    Engines,
    Triggers,
    Routines,
    Events,
    Views,
    BigRow,
    Bulk,
    /// MariaDB only.
    Sequences,
    /// MariaDB only.
    History,
}

impl Part {
    pub const ALL: [Part; 23] = [
        Part::Text,
        Part::Bytes,
        Part::Numbers,
        Part::Floats,
        Part::Temporal,
        Part::Choices,
        Part::Json,
        Part::Generated,
        Part::ForeignKeys,
        Part::Partitions,
        Part::Fulltext,
        Part::Spatial,
        Part::Counters,
        Part::Identifiers,
        Part::Engines,
        Part::Triggers,
        Part::Routines,
        Part::Events,
        Part::Views,
        Part::BigRow,
        Part::Bulk,
        Part::Sequences,
        Part::History,
    ];
}

/// Server-wide settings and the accounts the dataset's definers name, as root, without a
/// database. On a restore target, run it (or not) to decide whether the definers exist there.
pub fn accounts_sql(flavor: Flavor) -> String {
    let mut sql = String::new();
    if flavor == Flavor::Mysql {
        // Binary logging is on by default: routines by accounts without SUPER need this.
        sql.push_str("SET GLOBAL log_bin_trust_function_creators = 1;\n");
    }
    sql.push_str(&format!(
        "CREATE USER IF NOT EXISTS '{REPORT_OWNER}'@'%' IDENTIFIED BY 'report-Pw-7d1c';\n\
         GRANT SELECT ON `{db}`.* TO '{REPORT_OWNER}'@'%';\n",
        db = MysqlContainer::APP_DB
    ));
    sql
}

/// Drops `db` (the image's entrypoint made an empty one) and creates it with the dataset's
/// default character set and collation. The application user's grant on it survives the drop.
pub fn create_database_sql(db: &str) -> String {
    format!(
        "DROP DATABASE IF EXISTS {q};\nCREATE DATABASE {q} CHARACTER SET {DB_CHARSET} COLLATE {DB_COLLATION};\n",
        q = ident(db)
    )
}

/// The seeding scripts of `parts` for `flavor`, in order, each run as root with the database
/// as the default one (`mariadb|mysql --database=… -e <script>`). Scripts use `DELIMITER` where
/// a body holds `;`.
pub fn scripts(flavor: Flavor, parts: &[Part]) -> Vec<(Part, String)> {
    let maria = flavor == Flavor::Mariadb;
    let mut out = Vec::new();
    for &part in parts {
        let sql = match part {
            Part::Text => TEXT.to_string(),
            Part::Bytes => bytes_sql(),
            Part::Numbers => NUMBERS.to_string(),
            Part::Floats => floats_sql(flavor),
            Part::Temporal => TEMPORAL.to_string(),
            Part::Choices => CHOICES.to_string(),
            Part::Json => JSON.to_string(),
            Part::Generated => GENERATED.to_string(),
            Part::ForeignKeys => FOREIGN_KEYS.to_string(),
            Part::Partitions => PARTITIONS.to_string(),
            Part::Fulltext => FULLTEXT.to_string(),
            Part::Spatial => if maria {
                SPATIAL_MARIADB
            } else {
                SPATIAL_MYSQL
            }
            .to_string(),
            Part::Counters => COUNTERS.to_string(),
            Part::Identifiers => IDENTIFIERS.to_string(),
            Part::Engines => {
                if maria {
                    format!("{ENGINES}{ENGINES_ARIA}")
                } else {
                    ENGINES.to_string()
                }
            }
            Part::Triggers => TRIGGERS.to_string(),
            Part::Routines => ROUTINES.to_string(),
            Part::Events => EVENTS.to_string(),
            Part::Views => VIEWS.to_string(),
            Part::BigRow => BIG_ROW.to_string(),
            Part::Bulk => {
                let depth = if maria {
                    "SET SESSION max_recursive_iterations = 1000000;\n"
                } else {
                    "SET SESSION cte_max_recursion_depth = 1000000;\n"
                };
                format!("{depth}{BULK}")
            }
            Part::Sequences if maria => SEQUENCES.to_string(),
            Part::History if maria => HISTORY.to_string(),
            Part::Sequences | Part::History => continue,
        };
        out.push((part, sql));
    }
    out
}

/// Seeds `db` on `server` (as root): server settings and accounts, the database with its
/// collation, then the scripts of `parts`.
pub async fn seed(server: &MysqlContainer, flavor: Flavor, db: &str, parts: &[Part]) -> Result<()> {
    server
        .root("", &accounts_sql(flavor))
        .await
        .context("creating the accounts")?;
    server
        .root("", &create_database_sql(db))
        .await
        .context("creating the database")?;
    for (part, sql) in scripts(flavor, parts) {
        server
            .root(db, &sql)
            .await
            .with_context(|| format!("seeding {part:?}"))?;
    }
    Ok(())
}

const TEXT: &str = r#"
CREATE TABLE texts (
    id INT PRIMARY KEY,
    u4 VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    u3 VARCHAR(100) CHARACTER SET utf8mb3,
    l1 VARCHAR(100) CHARACTER SET latin1,
    padded CHAR(10),
    body MEDIUMTEXT
);
INSERT INTO texts VALUES
    (1, '😀🦀 𠜎 日本語 🏳️‍🌈', 'ñandú € ✓', 'café ÿ € ß', 'pad', 'plain'),
    (2, '', '', '', '', ''),
    (3, NULL, NULL, NULL, NULL, NULL),
    (4, 'trailing   ', 'tab	inside', 'x', ' lead', CONCAT('nul:', CHAR(0), ' ctrl-z:', CHAR(26), ' bs:\\ q:\' dq:" nl:\n cr:\r tab:\t end')),
    (5, REPEAT('𝄞', 100), REPEAT('ё', 100), REPEAT('é', 100), 'ten chars!', REPEAT('line\n', 5000));
"#;

fn bytes_sql() -> String {
    let all: String = (0..=255u8).map(|b| format!("{b:02X}")).collect();
    let reversed: String = (0..=255u8).rev().map(|b| format!("{b:02X}")).collect();
    format!(
        r#"
CREATE TABLE bytes (id INT PRIMARY KEY, b VARBINARY(300), bb BLOB, fixed BINARY(4));
INSERT INTO bytes VALUES
    (1000, X'{all}', X'{reversed}', X'41000000'),
    (1001, X'', X'', X'00000000'),
    (1002, NULL, NULL, NULL),
    (1003, X'2020', X'00', X'20202020');
INSERT INTO bytes (id, b, bb, fixed)
WITH RECURSIVE s (n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 255)
SELECT n, UNHEX(LPAD(HEX(n), 2, '0')), UNHEX(REPEAT(LPAD(HEX(n), 2, '0'), 3)), NULL FROM s;
"#
    )
}

const NUMBERS: &str = r#"
CREATE TABLE numbers (
    id INT PRIMARY KEY,
    d65 DECIMAL(65, 30),
    du DECIMAL(20, 0) UNSIGNED,
    bi BIGINT, bu BIGINT UNSIGNED,
    ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT,
    i INT, iu INT UNSIGNED,
    b64 BIT(64), b1 BIT(1), y YEAR
);
INSERT INTO numbers VALUES
    (1, 99999999999999999999999999999999999.999999999999999999999999999999, 99999999999999999999,
     9223372036854775807, 18446744073709551615, 127, 255, 32767, 8388607, 2147483647, 4294967295,
     b'1111111111111111111111111111111111111111111111111111111111111111', b'1', 2155),
    (2, -99999999999999999999999999999999999.999999999999999999999999999999, 0,
     -9223372036854775808, 0, -128, 0, -32768, -8388608, -2147483648, 0, b'0', b'0', 1901),
    (3, 0.000000000000000000000000000001, 1, 0, 1, 0, 1, 0, 0, 0, 1,
     b'1000000000000000000000000000000000000000000000000000000000000001', NULL, 2000),
    (4, -0.000000000000000000000000000001, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

/// FLOAT and DOUBLE edge values. Negative zero: a literal `-0e0` is a negative zero in an
/// expression, but MariaDB stores +0 for it in both FLOAT and DOUBLE; a negative value too small
/// for a FLOAT (`-1e-46`) stores a FLOAT -0 there. Row 7 tries both ways; what the server
/// actually stored is what the fingerprint reads.
fn floats_sql(flavor: Flavor) -> String {
    let neg_zero = match flavor {
        Flavor::Mariadb => "(7, -1e-46, -0e0, 'negative zero')",
        Flavor::Mysql => "(7, -0e0, -0e0, 'negative zero')",
    };
    format!(
        r#"
CREATE TABLE floats (id INT PRIMARY KEY, f FLOAT, d DOUBLE, note VARCHAR(40));
INSERT INTO floats VALUES
    (1, 3.4028234663852886e38, 1.7976931348623157e308, 'max'),
    (2, -3.4028234663852886e38, -1.7976931348623157e308, 'min'),
    (3, 1.0000001, 1.0000000000000002, 'one ulp above 1'),
    (4, 16777216, 16777217, '2^24, 2^24+1'),
    (5, 1.401298464324817e-45, 4.9e-324, 'smallest denormals'),
    (6, 1.1754942106924411e-38, 2.2250738585072014e-308, 'smallest normals'),
    {neg_zero},
    (8, 0, 0, 'zero'),
    (9, 0.1, 0.1, 'a tenth'),
    (10, 123456.789, 0.30000000000000004, 'digits'),
    (11, NULL, NULL, 'null'),
    (12, 16777217, 9007199254740993, 'rounded on store');
"#
    )
}

const TEMPORAL: &str = r#"
SET SESSION sql_mode = '';
CREATE TABLE temporal (
    id INT PRIMARY KEY,
    d DATE, dt DATETIME, dt6 DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL,
    t TIME, t6 TIME(6), y YEAR
);
INSERT INTO temporal VALUES
    (1, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00',
     '-838:59:59', '-838:59:58.999999', 0),
    (2, '2024-00-15', '9999-12-31 23:59:59', '9999-12-31 23:59:59.999999', NULL,
     '838:59:59', '838:59:58.999999', 2155),
    (3, '1000-01-01', '1000-01-01 00:00:00', '1000-01-01 00:00:00.000001', NULL,
     '00:00:00', '-00:00:00.000001', 1901);
SET SESSION time_zone = '+00:00';
INSERT INTO temporal (id, ts) VALUES
    (4, '2025-10-26 00:30:00'), (5, '2025-10-26 01:30:00'),
    (6, '2025-03-30 00:59:59.999999'), (7, '2025-03-30 01:00:00'),
    (8, '1970-01-01 00:00:01'), (9, '2038-01-19 03:14:07.999999');
SET SESSION time_zone = 'Europe/Berlin';
INSERT INTO temporal (id, dt, ts) VALUES (10, '2025-10-26 02:30:00', '2025-10-26 02:30:00');
"#;

/// ENUM and SET values, with the error value '' (index 0) that a non-strict insert of a
/// non-member stores. (An ENUM that also has '' as a member cannot be told apart from the error
/// value in a dump's text: both are written as ''; that case is left out. So are members with
/// 4-byte characters: both servers keep member names in a 3-byte character set, SHOW CREATE
/// TABLE prints `?` for them, and a value using one loses that member on reload.)
const CHOICES: &str = r#"
SET SESSION sql_mode = '';
CREATE TABLE choices (
    id INT PRIMARY KEY,
    e ENUM('a', 'b', 'c ', 'ü'),
    e2 ENUM('x', 'y') NOT NULL,
    s SET('x', 'y', 'z', '€')
);
INSERT INTO choices VALUES
    (1, 'a', 'y', 'x,z'),
    (2, 'not a member', 'nope', 'w'),
    (3, NULL, 'x', NULL),
    (4, 'ü', 'y', 'x,y,z,€'),
    (5, '', '', ''),
    (6, 'c', 'x', 'z,x');
"#;

const JSON: &str = r#"
CREATE TABLE docs_json (id INT PRIMARY KEY, j JSON);
INSERT INTO docs_json VALUES
    (1, '{"a": {"b": [1, 2, {"c": null, "d": [[[]]]}]}, "z": true}'),
    (2, '"\\u00e9\\ud83d\\ude00 \\"quoted\\" \\\\ back"'),
    (3, '12345678901234567890123456789012345678901234567890'),
    (4, '{}'),
    (5, '[]'),
    (6, 'null'),
    (7, NULL),
    (8, '[-0.0, 1.7976931348623157e308, 5e-324, 0.1, -9223372036854775808, 18446744073709551615]'),
    (9, '{"😀": "𠜎", "": "", "k\\u0000": "nul"}');
"#;

const GENERATED: &str = r#"
CREATE TABLE gen (
    id INT PRIMARY KEY,
    a INT,
    doubled INT AS (a * 2) STORED,
    label VARCHAR(20) AS (CONCAT('v', a)) VIRTUAL,
    secret INT DEFAULT 7 INVISIBLE,
    KEY (label)
);
INSERT INTO gen (id, a) VALUES (1, 5), (2, NULL);
INSERT INTO gen (id, a, secret) VALUES (3, 6, 99), (4, -1, NULL);
"#;

const FOREIGN_KEYS: &str = r#"
CREATE TABLE fk_parent (a INT, b VARCHAR(10), note VARCHAR(20), PRIMARY KEY (a, b));
CREATE TABLE fk_child (
    id INT PRIMARY KEY, pa INT, pb VARCHAR(10),
    CONSTRAINT fk_child_parent FOREIGN KEY (pa, pb) REFERENCES fk_parent (a, b)
        ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE TABLE ring_a (id INT PRIMARY KEY, b_id INT NULL);
CREATE TABLE ring_b (
    id INT PRIMARY KEY, a_id INT NULL,
    CONSTRAINT fk_ring_b_a FOREIGN KEY (a_id) REFERENCES ring_a (id)
);
ALTER TABLE ring_a ADD CONSTRAINT fk_ring_a_b FOREIGN KEY (b_id) REFERENCES ring_b (id);
INSERT INTO fk_parent VALUES (1, 'x', 'one'), (2, 'y', 'two');
INSERT INTO fk_child VALUES (1, 1, 'x'), (2, 2, 'y'), (3, NULL, NULL);
INSERT INTO ring_a VALUES (1, NULL), (2, NULL);
INSERT INTO ring_b VALUES (1, 1), (2, 2);
UPDATE ring_a SET b_id = 3 - id;
"#;

const PARTITIONS: &str = r#"
CREATE TABLE parts (
    id INT NOT NULL, created DATE NOT NULL, v VARCHAR(20),
    PRIMARY KEY (id, created)
)
PARTITION BY RANGE (YEAR(created)) SUBPARTITION BY HASH (id) SUBPARTITIONS 2 (
    PARTITION p2023 VALUES LESS THAN (2024),
    PARTITION p2024 VALUES LESS THAN (2025),
    PARTITION pmax VALUES LESS THAN MAXVALUE
);
INSERT INTO parts VALUES
    (1, '2023-05-01', 'a'), (2, '2023-12-31', 'b'), (3, '2024-01-01', 'c'),
    (4, '2024-06-30', 'd'), (5, '2030-01-01', 'e'), (6, '2099-12-31', 'f');
"#;

const FULLTEXT: &str = r#"
CREATE TABLE articles (
    id INT AUTO_INCREMENT PRIMARY KEY,
    title VARCHAR(200),
    body TEXT,
    FULLTEXT KEY ft_article (title, body)
);
INSERT INTO articles (title, body) VALUES
    ('Backups', 'Logical backups stream through the runner'),
    ('Restores', 'A restore must be exact, byte for byte'),
    ('Überschrift', 'Straße und Grüße');
"#;

/// MySQL: the column's SRID is part of its type (`SRID 4326`), and 4326 is geographic with
/// latitude first.
const SPATIAL_MYSQL: &str = r#"
CREATE TABLE places (
    id INT PRIMARY KEY,
    pt POINT NOT NULL SRID 4326,
    shape GEOMETRY,
    SPATIAL KEY sp_pt (pt)
);
INSERT INTO places VALUES
    (1, ST_GeomFromText('POINT(52.52 13.405)', 4326), ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0))')),
    (2, ST_GeomFromText('POINT(-33.8688 151.2093)', 4326), ST_GeomFromText('LINESTRING(0 0,1 1,2 0)', 3857)),
    (3, ST_GeomFromText('POINT(0 0)', 4326), NULL);
"#;

/// MariaDB: every value carries its own SRID. A column's `REF_SYSTEM_ID` is left out here:
/// mariadb-dump cannot print it, and the runner names that loss before the dump (checked in the
/// image suite's named-loss scenario).
const SPATIAL_MARIADB: &str = r#"
CREATE TABLE places (
    id INT PRIMARY KEY,
    pt POINT NOT NULL,
    shape GEOMETRY,
    SPATIAL KEY sp_pt (pt)
);
INSERT INTO places VALUES
    (1, ST_GeomFromText('POINT(13.405 52.52)', 4326), ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0))')),
    (2, ST_GeomFromText('POINT(151.2093 -33.8688)', 4326), ST_GeomFromText('LINESTRING(0 0,1 1,2 0)', 3857)),
    (3, ST_GeomFromText('POINT(0 0)', 4326), NULL);
"#;

/// AUTO_INCREMENT counters above the highest id: after deleted rows, and moved by hand.
const COUNTERS: &str = r#"
CREATE TABLE gaps (id INT AUTO_INCREMENT PRIMARY KEY, v INT);
INSERT INTO gaps (v) VALUES (1), (2), (3), (4), (5);
DELETE FROM gaps WHERE id IN (2, 4, 5);
CREATE TABLE moved (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, v INT);
INSERT INTO moved (v) VALUES (1);
ALTER TABLE moved AUTO_INCREMENT = 1000;
"#;

const IDENTIFIERS: &str = r#"
CREATE TABLE `odd ``name`` ü 日本` (
    `col with space` INT PRIMARY KEY,
    `select` VARCHAR(10),
    `日本語` INT,
    `back``tick` VARCHAR(10),
    `dots.and-dashes` INT
);
INSERT INTO `odd ``name`` ü 日本` VALUES (1, 'from', 2, 'b`t', 3), (2, NULL, NULL, '', NULL);
CREATE TABLE `123numeric` (`1` INT PRIMARY KEY, `2e3` INT);
INSERT INTO `123numeric` VALUES (1, 2);
"#;

const ENGINES: &str = r#"
CREATE TABLE legacy_myisam (id INT PRIMARY KEY, v VARCHAR(20), n INT AUTO_INCREMENT, KEY (n)) ENGINE = MyISAM;
INSERT INTO legacy_myisam (id, v) VALUES (1, 'myisam'), (2, 'ü');
"#;

const ENGINES_ARIA: &str = r#"
CREATE TABLE legacy_aria (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE = Aria TRANSACTIONAL = 1;
INSERT INTO legacy_aria VALUES (1, 'aria'), (2, '😀');
"#;

/// Three triggers on the same event, made in an order that differs from their action order.
const TRIGGERS: &str = r#"
CREATE TABLE trig_target (id INT AUTO_INCREMENT PRIMARY KEY, v INT, log VARCHAR(200) DEFAULT '');
CREATE TRIGGER trig_first BEFORE INSERT ON trig_target FOR EACH ROW
    SET NEW.log = CONCAT(NEW.log, 'first;');
CREATE TRIGGER trig_second BEFORE INSERT ON trig_target FOR EACH ROW FOLLOWS trig_first
    SET NEW.log = CONCAT(NEW.log, 'second;');
CREATE TRIGGER trig_zero BEFORE INSERT ON trig_target FOR EACH ROW PRECEDES trig_first
    SET NEW.log = CONCAT(NEW.log, 'zero;');
DELIMITER //
CREATE TRIGGER trig_after AFTER INSERT ON trig_target FOR EACH ROW
BEGIN
    DECLARE n INT DEFAULT 0;
    SET n = NEW.v * 2;
    SET @trig_after_last = n;
END//
DELIMITER ;
INSERT INTO trig_target (v) VALUES (1), (2);
"#;

/// A function created under `ANSI_QUOTES,NO_BACKSLASH_ESCAPES` (its backslashes are literal and
/// `"` quotes identifiers), and a procedure with a compound body. Their definer is the
/// application user: MySQL shows a routine's body only to its definer or to holders of
/// SHOW_ROUTINE (or global SELECT), so the application user could not dump a routine of root's.
const ROUTINES: &str = r#"
CREATE TABLE routine_log (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(100));
SET SESSION sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES';
CREATE DEFINER = 'app_user'@'%' FUNCTION ansi_path () RETURNS VARCHAR(100) DETERMINISTIC
    RETURN CONCAT('C:\new\table', (SELECT COUNT(*) FROM "routine_log"));
SET SESSION sql_mode = DEFAULT;
DELIMITER //
CREATE DEFINER = 'app_user'@'%' PROCEDURE log_many (IN n INT)
    MODIFIES SQL DATA
BEGIN
    DECLARE i INT DEFAULT 0;
    WHILE i < n DO
        INSERT INTO routine_log (msg) VALUES (CONCAT('entry ', i, '; done'));
        SET i = i + 1;
    END WHILE;
END//
DELIMITER ;
CREATE DEFINER = 'app_user'@'%' FUNCTION log_count () RETURNS INT READS SQL DATA
    RETURN (SELECT COUNT(*) FROM routine_log);
CALL log_many(3);
"#;

/// An event created in a session time zone of +05:30: its STARTS is read in that zone.
const EVENTS: &str = r#"
SET SESSION time_zone = '+05:30';
CREATE EVENT ev_tz ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00'
    ON COMPLETION PRESERVE
    DO DELETE FROM trig_target WHERE id < 0;
SET SESSION time_zone = DEFAULT;
CREATE EVENT ev_disabled ON SCHEDULE AT '2031-06-01 12:00:00' ON COMPLETION PRESERVE DISABLE
    COMMENT 'never runs'
    DO DELETE FROM trig_target WHERE id < 0;
"#;

/// A view owned by `report_owner` (SQL SECURITY DEFINER), and a view on top of it.
const VIEWS: &str = r#"
CREATE TABLE report_src (id INT PRIMARY KEY, amount DECIMAL(10, 2), region VARCHAR(10));
INSERT INTO report_src VALUES (1, 10.50, 'eu'), (2, 20.25, 'us'), (3, 0.01, 'eu');
CREATE ALGORITHM = MERGE DEFINER = 'report_owner'@'%' SQL SECURITY DEFINER VIEW report_v AS
    SELECT region, SUM(amount) AS total FROM report_src GROUP BY region;
CREATE SQL SECURITY INVOKER VIEW report_summary AS
    SELECT COUNT(*) AS regions, MAX(total) AS top FROM report_v;
"#;

/// One row of 22 MB; an INSERT of it is larger than the clients' default max_allowed_packet.
const BIG_ROW: &str = r#"
CREATE TABLE big (id INT PRIMARY KEY, payload LONGBLOB);
INSERT INTO big VALUES (1, REPEAT(UNHEX('00FF7F80'), 5500000)), (2, X'00');
"#;

const BULK: &str = r#"
CREATE TABLE bulk (
    id INT PRIMARY KEY, k INT NOT NULL, label VARCHAR(40), amount DECIMAL(12, 2), at DATETIME,
    KEY (k)
);
INSERT INTO bulk
WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 200000)
SELECT n, n % 997, CONCAT('row ', n, ' ü'), n * 0.37, '2024-01-01' + INTERVAL n MINUTE FROM s;
"#;

/// MariaDB: a cached sequence in use by a column default, one that has cycled twice, and a
/// descending one.
const SEQUENCES: &str = r#"
CREATE SEQUENCE seq_cached START WITH 100 INCREMENT BY 5 CACHE 10;
CREATE SEQUENCE seq_cycle MINVALUE 1 MAXVALUE 3 START WITH 1 NOCACHE CYCLE;
CREATE SEQUENCE seq_desc INCREMENT BY -1 MINVALUE -1000 MAXVALUE -1 START WITH -1 CACHE 5;
SELECT NEXTVAL(seq_cycle), NEXTVAL(seq_cycle), NEXTVAL(seq_cycle), NEXTVAL(seq_cycle),
       NEXTVAL(seq_cycle), NEXTVAL(seq_cycle), NEXTVAL(seq_cycle);
SELECT NEXTVAL(seq_desc), NEXTVAL(seq_desc);
CREATE TABLE uses_seq (id BIGINT NOT NULL DEFAULT NEXTVAL(seq_cached) PRIMARY KEY, v VARCHAR(10));
INSERT INTO uses_seq (v) VALUES ('a'), ('b'), ('c');
"#;

/// MariaDB: a system-versioned table whose history has 5 rows (3 inserted, one updated twice,
/// one deleted).
const HISTORY: &str = r#"
CREATE TABLE versioned (id INT PRIMARY KEY, v VARCHAR(20), d DOUBLE) WITH SYSTEM VERSIONING;
INSERT INTO versioned VALUES (1, 'one', 0.1), (2, 'two', 2), (3, 'three', 16777217);
UPDATE versioned SET v = 'one-b' WHERE id = 1;
UPDATE versioned SET v = 'one-c' WHERE id = 1;
DELETE FROM versioned WHERE id = 2;
"#;

/// A quoted identifier.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A quoted string literal (backslashes escaped too: the sessions here keep the default
/// sql_mode).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

// ------------------------------------------------------------------------------------------
// The comparer.

/// What a difference is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// The database's default character set and collation.
    Database,
    /// `SHOW CREATE …` of every table, view, routine, trigger (with its action order) and
    /// event, with the session values they were created under; column SRIDs on MariaDB. In a
    /// CREATE TABLE, the AUTO_INCREMENT option is left to [`Class::Counters`] and a column's
    /// `CHARACTER SET` is left out when a `COLLATE` follows (see `collation_only`).
    Definitions,
    /// AUTO_INCREMENT counters.
    Counters,
    /// Every row of every table, exactly.
    Rows,
    /// History rows of system-versioned tables (MariaDB), with their row_start/row_end.
    History,
    /// Sequence state (MariaDB).
    Sequences,
    /// Engine, row format, collation, comment and partitions (with sub-partitions) of every table.
    Options,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Database => "database",
            Class::Definitions => "definitions",
            Class::Counters => "counters",
            Class::Rows => "rows",
            Class::History => "history",
            Class::Sequences => "sequences",
            Class::Options => "options",
        })
    }
}

/// The rows of one table: their count, a sha256 over all of them, and per row its key and a
/// short digest, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRows {
    pub count: usize,
    pub sha256: String,
    rows: Vec<(String, u64)>,
}

impl TableRows {
    #[cfg(test)]
    fn from_output(out: &str, key_fields: usize) -> TableRows {
        TableRows::from_lines(out.lines(), key_fields)
    }

    fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>, key_fields: usize) -> TableRows {
        let mut all = Sha256::new();
        let mut rows = Vec::new();
        for line in lines {
            all.update(line.as_bytes());
            all.update(b"\n");
            let key = line
                .split('\t')
                .take(key_fields.max(1))
                .collect::<Vec<_>>()
                .join(", ");
            let digest = Sha256::digest(line.as_bytes());
            let mut short = [0u8; 8];
            short.copy_from_slice(&digest[..8]);
            rows.push((key, u64::from_be_bytes(short)));
        }
        TableRows {
            count: rows.len(),
            sha256: hex::encode(all.finalize()),
            rows,
        }
    }

    /// Where two tables' rows first differ.
    fn first_difference(&self, other: &TableRows) -> String {
        let at = self
            .rows
            .iter()
            .zip(&other.rows)
            .position(|(a, b)| a != b)
            .unwrap_or(self.count.min(other.count));
        let key = |rows: &[(String, u64)]| {
            rows.get(at)
                .map(|(k, _)| format!("key ({k})"))
                .unwrap_or_else(|| "no row".into())
        };
        let (mine, theirs) = (key(&self.rows), key(&other.rows));
        let which = if mine == theirs {
            format!("the row with {mine} differs")
        } else {
            format!("{mine} vs {theirs}")
        };
        let mut text = format!(
            "{} rows vs {}; first difference at row {}: {which}",
            self.count,
            other.count,
            at + 1
        );
        if self.count == other.count {
            // Same keys in the same places: name every row that differs (up to 10).
            let differing: Vec<&str> = self
                .rows
                .iter()
                .zip(&other.rows)
                .filter(|(a, b)| a != b)
                .map(|(a, _)| a.0.as_str())
                .collect();
            if differing.len() > 1 {
                let shown: Vec<String> = differing
                    .iter()
                    .take(10)
                    .map(|k| format!("({k})"))
                    .collect();
                text.push_str(&format!(
                    "; {} rows differ, keys {}{}",
                    differing.len(),
                    shown.join(" "),
                    if differing.len() > 10 { " …" } else { "" }
                ));
            }
        }
        text
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Rows(TableRows),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(t) => {
                let short: String = t.chars().take(400).collect();
                if short.len() < t.len() {
                    write!(f, "{short}…")
                } else {
                    f.write_str(&short)
                }
            }
            Value::Rows(r) => write!(f, "{} rows, sha256 {}", r.count, r.sha256),
        }
    }
}

/// A database as the comparer sees it: per class, per object, a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint {
    pub classes: BTreeMap<Class, BTreeMap<String, Value>>,
}

impl Fingerprint {
    fn put(&mut self, class: Class, object: impl Into<String>, value: Value) {
        self.classes
            .entry(class)
            .or_default()
            .insert(object.into(), value);
    }

    fn text(&mut self, class: Class, object: impl Into<String>, value: impl Into<String>) {
        self.put(class, object, Value::Text(value.into()));
    }

    /// The value of one object, for assertions about the dataset.
    pub fn get(&self, class: Class, object: &str) -> Option<&Value> {
        self.classes.get(&class)?.get(object)
    }

    /// The text of one object (`None` for rows or a missing object).
    pub fn text_of(&self, class: Class, object: &str) -> Option<&str> {
        match self.get(class, object)? {
            Value::Text(t) => Some(t),
            Value::Rows(_) => None,
        }
    }

    /// The rows of one table.
    pub fn rows_of(&self, table: &str) -> Option<&TableRows> {
        match self.get(Class::Rows, table)? {
            Value::Rows(r) => Some(r),
            Value::Text(_) => None,
        }
    }

    /// The same fingerprint without qualifiers naming database `db` itself (`` `db`. ``) in
    /// definitions, to compare databases of different names: a view or a column default may
    /// name its own database explicitly or not (MariaDB prints `` `app_copy`.`t`.`c` `` for a
    /// view made while another database was the default one), which means the same. A
    /// reference to any other database stays.
    pub fn unqualified(&self, db: &str) -> Fingerprint {
        let qualifier = format!("{}.", ident(db));
        let mut out = self.clone();
        if let Some(defs) = out.classes.get_mut(&Class::Definitions) {
            for value in defs.values_mut() {
                if let Value::Text(t) = value {
                    *t = t.replace(&qualifier, "");
                }
            }
        }
        out
    }
}

/// One difference between two fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub class: Class,
    pub object: String,
    pub detail: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.class, self.object, self.detail)
    }
}

/// Every difference between `expected` and `actual`, by class and object.
pub fn diff(expected: &Fingerprint, actual: &Fingerprint) -> Vec<Difference> {
    let mut out = Vec::new();
    let empty = BTreeMap::new();
    let mut classes: Vec<Class> = expected.classes.keys().copied().collect();
    classes.extend(actual.classes.keys().copied());
    classes.sort();
    classes.dedup();
    for class in classes {
        let a = expected.classes.get(&class).unwrap_or(&empty);
        let b = actual.classes.get(&class).unwrap_or(&empty);
        let mut objects: Vec<&String> = a.keys().chain(b.keys()).collect();
        objects.sort();
        objects.dedup();
        for object in objects {
            let detail = match (a.get(object), b.get(object)) {
                (Some(x), Some(y)) if x == y => continue,
                (Some(x), None) => format!("missing (expected {x})"),
                (None, Some(y)) => format!("unexpected ({y})"),
                (Some(Value::Rows(x)), Some(Value::Rows(y))) => x.first_difference(y),
                (Some(Value::Text(x)), Some(Value::Text(y))) => text_difference(x, y),
                (Some(x), Some(y)) => format!("expected {x}\n      actual   {y}"),
                (None, None) => continue,
            };
            out.push(Difference {
                class,
                object: object.clone(),
                detail,
            });
        }
    }
    out
}

/// A text cut to 300 characters for a report.
pub fn short(t: &str) -> String {
    let s: String = t.chars().take(300).collect();
    if s.len() < t.len() {
        format!("{s}…")
    } else {
        s
    }
}

/// Two texts, or for multi-line ones (definitions) the first line that differs.
pub fn text_difference(expected: &str, actual: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    if a.len() <= 1 && b.len() <= 1 {
        return format!(
            "expected {}\n      actual   {}",
            short(expected),
            short(actual)
        );
    }
    let at = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    format!(
        "line {} of {}: expected {}\n      actual   {}",
        at + 1,
        a.len(),
        short(a.get(at).copied().unwrap_or("(none)")),
        short(b.get(at).copied().unwrap_or("(none)"))
    )
}

/// The classes that differ, once each.
pub fn classes(differences: &[Difference]) -> Vec<Class> {
    let mut c: Vec<Class> = differences.iter().map(|d| d.class).collect();
    c.dedup();
    c
}

/// The differences, one per line, for an assertion message.
pub fn report(differences: &[Difference]) -> String {
    differences
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One column, from information_schema.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    data_type: String,
    key: bool,
    extra: String,
}

/// The lossless read of one column: the text that tells any two stored values apart.
///
/// - FLOAT: `col * 1e0`, the float's exact value as a double (a FLOAT column itself prints 6
///   significant digits). MySQL prints a DOUBLE *expression* in at most 22 characters
///   (`-1.7976931348623157e308 * 1e0` → `-1.797693134862316e308`, out of range), which is
///   still exact enough to tell floats apart, but not doubles.
/// - DOUBLE: the column's own text, shortest round-trip on both servers (up to 17 digits, 24
///   characters).
/// - Both: a zero's sign is read with `ATAN2(col, -1)` (-π for -0): MariaDB prints `-0` as `0`.
/// - TIMESTAMP: `UNIX_TIMESTAMP` (independent of the session's time zone, and the two instants
///   of a DST fold stay apart); other temporal types and numbers as text.
/// - ENUM and SET: the bytes and the index (`col + 0`: the error value '' is index 0).
/// - Spatial: the SRID and the stored bytes (which begin with the SRID).
/// - JSON on MySQL: its text (MariaDB's JSON is LONGTEXT).
/// - Strings and blobs: their bytes in hex; longer than 512 bytes, the length and a sha256.
pub fn value_expr(flavor: Flavor, column: &str, data_type: &str) -> String {
    let c = ident(column);
    match data_type {
        "float" => format!("IF({c} = 0, IF(ATAN2({c}, -1) < 0, '-0', '0'), CONCAT({c} * 1e0))"),
        "double" | "real" | "double precision" => {
            format!("IF({c} = 0, IF(ATAN2({c}, -1) < 0, '-0', '0'), CONCAT({c}))")
        }
        "decimal" | "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
        | "year" | "date" | "datetime" | "time" => format!("CONCAT({c})"),
        "bit" => format!("CONCAT({c} + 0)"),
        "timestamp" => format!("CONCAT(UNIX_TIMESTAMP({c}))"),
        "enum" | "set" => format!("CONCAT(HEX({c}), '/', {c} + 0)"),
        "json" if flavor == Flavor::Mysql => format!("HEX(CAST({c} AS CHAR))"),
        "point" | "linestring" | "polygon" | "geometry" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => {
            format!("CONCAT(ST_SRID({c}), ':', HEX({c}))")
        }
        _ => format!(
            "IF(LENGTH({c}) > 512, CONCAT('len ', LENGTH({c}), ' sha256 ', SHA2({c}, 256)), HEX({c}))"
        ),
    }
}

/// Rows of `width` fields from the client's `--batch` output, its escapes (`\t`, `\n`, `\\`,
/// `\0`) undone. Empty trailing fields the output lost (it is trimmed) come back empty.
fn batch_rows(out: &str, width: usize) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut row: Vec<String> = l.split('\t').map(unescape).collect();
            if row.len() < width {
                row.resize(width, String::new());
            }
            row
        })
        .collect()
}

fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// A column's `CHARACTER SET <cs> COLLATE <collation>` written as `COLLATE <collation>` (the
/// collation names its character set). MySQL prints the character set of a column that
/// inherited a non-default collation only once the collation was given explicitly, and a dump
/// always gives it: running SHOW CREATE TABLE's own output adds `CHARACTER SET utf8mb4` to
/// such columns, for the same column.
fn collation_only(create: &str) -> String {
    const CS: &str = " CHARACTER SET ";
    let mut out = String::with_capacity(create.len());
    let mut rest = create;
    while let Some(at) = rest.find(CS) {
        let after = &rest[at + CS.len()..];
        let name = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        out.push_str(&rest[..at]);
        if after[name..].starts_with(" COLLATE ") {
            rest = &after[name..];
        } else {
            out.push_str(CS);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// ` AUTO_INCREMENT=<n>` removed from a CREATE TABLE: counters are their own class.
fn without_counter(create: &str) -> String {
    const OPT: &str = " AUTO_INCREMENT=";
    match create.find(OPT) {
        Some(at) => {
            let rest = &create[at + OPT.len()..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            format!("{}{}", &create[..at], &rest[digits..])
        }
        None => create.to_string(),
    }
}

/// Session settings of every comparer query: UTC for temporal text, fresh statistics on MySQL.
fn session(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Mariadb => "SET SESSION time_zone = '+00:00';\n",
        Flavor::Mysql => {
            "SET SESSION time_zone = '+00:00'; SET SESSION information_schema_stats_expiry = 0;\n"
        }
    }
}

/// Output lines of one client run whose rows start with a tag, grouped by tag (the tag and
/// its tab removed), in order.
fn by_tag(out: &str) -> BTreeMap<String, Vec<&str>> {
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for line in out.lines().filter(|l| !l.is_empty()) {
        let (tag, rest) = line.split_once('\t').unwrap_or((line, ""));
        groups.entry(tag.to_string()).or_default().push(rest);
    }
    groups
}

/// The rows of one tag as fields, padded to `width`.
fn tagged(groups: &BTreeMap<String, Vec<&str>>, tag: &str, width: usize) -> Vec<Vec<String>> {
    groups
        .get(tag)
        .map(|lines| batch_rows(&lines.join("\n"), width))
        .unwrap_or_default()
}

/// Reads database `db` on `server` (as root, through the container's own client, in three
/// runs: the catalog, the definitions, the data).
pub async fn fingerprint(server: &MysqlContainer, flavor: Flavor, db: &str) -> Result<Fingerprint> {
    let pre = session(flavor);
    let schema = literal(db);
    let mut fp = Fingerprint::default();

    // 1. The catalog: every row tagged with what it lists. (create_options is read but not
    // compared: it lists the options given explicitly, and a dump states every effective one,
    // e.g. an Aria table's PAGE_CHECKSUM=1; SHOW CREATE TABLE compares the effective options.)
    let mut catalog = format!(
        "{pre}SELECT 'schema', default_character_set_name, default_collation_name \
           FROM information_schema.schemata WHERE schema_name = {schema};
         SELECT 'table', table_name, table_type, COALESCE(engine, ''), COALESCE(row_format, ''), \
           COALESCE(table_collation, ''), COALESCE(create_options, ''), COALESCE(table_comment, ''), \
           COALESCE(auto_increment, '') \
           FROM information_schema.tables WHERE table_schema = {schema} ORDER BY table_name;
         SELECT 'routine', routine_type, routine_name FROM information_schema.routines \
           WHERE routine_schema = {schema} ORDER BY routine_type, routine_name;
         SELECT 'trigger', trigger_name, event_object_table, action_timing, event_manipulation, \
           action_order FROM information_schema.triggers WHERE trigger_schema = {schema} \
           ORDER BY trigger_name;
         SELECT 'event', event_name FROM information_schema.events WHERE event_schema = {schema} \
           ORDER BY event_name;
         SELECT 'partition', table_name, partition_name, COALESCE(subpartition_name, ''), \
           partition_ordinal_position, COALESCE(subpartition_ordinal_position, ''), \
           partition_method, COALESCE(subpartition_method, ''), partition_expression, \
           COALESCE(subpartition_expression, ''), COALESCE(partition_description, '') \
           FROM information_schema.partitions \
           WHERE table_schema = {schema} AND partition_name IS NOT NULL \
           ORDER BY table_name, partition_ordinal_position, subpartition_ordinal_position;
         SELECT 'column', c.table_name, c.column_name, LOWER(c.data_type), c.column_key, c.extra \
           FROM information_schema.columns c JOIN information_schema.tables t \
             ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
           WHERE c.table_schema = {schema} AND t.table_type IN ('BASE TABLE', 'SYSTEM VERSIONED') \
           ORDER BY c.table_name, c.ordinal_position;\n"
    );
    if flavor == Flavor::Mariadb {
        // MariaDB keeps a column's REF_SYSTEM_ID out of SHOW CREATE TABLE.
        catalog.push_str(&format!(
            "SELECT 'srid', g_table_name, g_geometry_column, srid \
               FROM information_schema.geometry_columns WHERE g_table_schema = {schema} \
               ORDER BY g_table_name, g_geometry_column;\n"
        ));
    }
    let out = server
        .root("", &catalog)
        .await
        .context("reading the catalog")?;
    let groups = by_tag(&out);
    let defaults = tagged(&groups, "schema", 2);
    let Some(defaults) = defaults.first() else {
        bail!("database {db} does not exist");
    };
    fp.text(Class::Database, "defaults", defaults.join("\t"));
    let tables = tagged(&groups, "table", 8);
    let triggers = tagged(&groups, "trigger", 5);
    let mut shows = Vec::new();
    for t in &tables {
        let (name, kind) = (&t[0], t[1].as_str());
        if kind == "VIEW" {
            shows.push((
                format!("view {name}"),
                format!("SHOW CREATE VIEW {}", ident(name)),
            ));
            continue;
        }
        shows.push((
            format!("table {name}"),
            format!("SHOW CREATE TABLE {}", ident(name)),
        ));
        if kind == "SEQUENCE" {
            continue;
        }
        fp.text(
            Class::Options,
            format!("table {name}"),
            format!(
                "type={kind} engine={} row_format={} collation={} comment={}",
                t[2], t[3], t[4], t[6]
            ),
        );
        if !t[7].is_empty() && t[7] != "NULL" {
            fp.text(
                Class::Counters,
                format!("auto_increment {name}"),
                t[7].clone(),
            );
        }
    }
    for r in tagged(&groups, "routine", 2) {
        shows.push((
            format!("{} {}", r[0].to_lowercase(), r[1]),
            format!("SHOW CREATE {} {}", r[0], ident(&r[1])),
        ));
    }
    for t in &triggers {
        shows.push((
            format!("trigger {}", t[0]),
            format!("SHOW CREATE TRIGGER {}", ident(&t[0])),
        ));
    }
    for e in tagged(&groups, "event", 1) {
        shows.push((
            format!("event {}", e[0]),
            format!("SHOW CREATE EVENT {}", ident(&e[0])),
        ));
    }
    for g in tagged(&groups, "srid", 3) {
        fp.text(
            Class::Definitions,
            format!("srid {}.{}", g[0], g[1]),
            g[2].clone(),
        );
    }
    for p in tagged(&groups, "partition", 10) {
        let sub = if p[2].is_empty() {
            String::new()
        } else {
            format!(".{}", p[2])
        };
        fp.text(
            Class::Options,
            format!("partition {}.{}{sub}", p[0], p[1]),
            p[3..].join(" | "),
        );
    }

    // 2. Definitions: every SHOW CREATE returns one row, one line in batch mode.
    if !shows.is_empty() {
        let script: String = shows.iter().map(|(_, s)| format!("{s};\n")).collect();
        let out = server
            .root(db, &format!("{pre}{script}"))
            .await
            .context("SHOW CREATE …")?;
        let lines: Vec<&str> = out.lines().collect();
        if lines.len() != shows.len() {
            bail!(
                "{} SHOW CREATE statements returned {} lines:\n{out}",
                shows.len(),
                lines.len()
            );
        }
        for ((object, _), line) in shows.iter().zip(lines) {
            let mut fields: Vec<String> = line.split('\t').map(unescape).collect();
            if object.starts_with("table ") && fields.len() > 1 {
                fields[1] = collation_only(&without_counter(&fields[1]));
            }
            if let Some(name) = object.strip_prefix("trigger ") {
                // SHOW CREATE TRIGGER ends with `Created`, the time it was made: not part of it.
                fields.truncate(6);
                let t = triggers.iter().find(|t| t[0] == name).expect("listed");
                fields.push(format!(
                    "table={} {} {} action_order={}",
                    t[1], t[2], t[3], t[4]
                ));
            }
            fp.text(Class::Definitions, object.clone(), fields.join("\n"));
        }
    }

    // 3. The data: every table's rows, the history of system-versioned tables and the state of
    // sequences, each row tagged with its query's number.
    let mut by_table: BTreeMap<String, Vec<Column>> = BTreeMap::new();
    for c in tagged(&groups, "column", 5) {
        by_table.entry(c[0].clone()).or_default().push(Column {
            name: c[1].clone(),
            data_type: c[2].clone(),
            key: c[3] == "PRI",
            extra: c[4].to_uppercase(),
        });
    }
    // (class, object, key fields) per query.
    let mut queries: Vec<(Class, String, usize)> = Vec::new();
    let mut script = String::from(pre);
    for t in &tables {
        let (name, kind) = (&t[0], t[1].as_str());
        let table = ident(name);
        let tag = |n: usize| format!("'{n}'");
        if kind == "SEQUENCE" {
            script.push_str(&format!(
                "SELECT {}, next_not_cached_value, minimum_value, maximum_value, start_value, \
                 increment, cache_size, cycle_option, cycle_count FROM {table};\n",
                tag(queries.len())
            ));
            queries.push((Class::Sequences, format!("sequence {name}"), 0));
            continue;
        }
        if kind != "BASE TABLE" && kind != "SYSTEM VERSIONED" {
            continue;
        }
        let cols = by_table
            .get(name)
            .with_context(|| format!("no columns listed for {name}"))?;
        let (select, keys, order) = row_query(flavor, cols);
        script.push_str(&format!(
            "SELECT {}, {select} FROM {table} ORDER BY {order};\n",
            tag(queries.len())
        ));
        queries.push((Class::Rows, name.clone(), keys));
        if kind == "SYSTEM VERSIONED" {
            let period = |marker: &str, implicit: &str| {
                cols.iter()
                    .find(|c| c.extra.contains(marker))
                    .map(|c| ident(&c.name))
                    .unwrap_or_else(|| implicit.to_string())
            };
            let (start, end) = (
                period("ROW START", "ROW_START"),
                period("ROW END", "ROW_END"),
            );
            script.push_str(&format!(
                "SELECT {}, {select}, CONCAT({start}), CONCAT({end}) FROM {table} \
                 FOR SYSTEM_TIME ALL ORDER BY {order}, {end}, {start};\n",
                tag(queries.len())
            ));
            queries.push((Class::History, name.clone(), keys));
        }
    }
    let out = server.root(db, &script).await.context("reading the rows")?;
    let groups = by_tag(&out);
    for (n, (class, object, keys)) in queries.into_iter().enumerate() {
        let lines = groups.get(&n.to_string()).cloned().unwrap_or_default();
        let value = if class == Class::Sequences {
            Value::Text(format!(
                "next_not_cached_value minimum_value maximum_value start_value increment \
                 cache_size cycle_option cycle_count = {}",
                lines.join("\n").replace('\t', " ")
            ))
        } else {
            Value::Rows(TableRows::from_lines(lines, keys))
        };
        fp.put(class, object, value);
    }
    Ok(fp)
}

/// The select list (key columns first), how many leading fields are the key, and the ORDER BY.
fn row_query(flavor: Flavor, cols: &[Column]) -> (String, usize, String) {
    let keys: Vec<&Column> = cols.iter().filter(|c| c.key).collect();
    let mut exprs: Vec<String> = keys
        .iter()
        .map(|c| value_expr(flavor, &c.name, &c.data_type))
        .collect();
    exprs.extend(
        cols.iter()
            .map(|c| value_expr(flavor, &c.name, &c.data_type)),
    );
    let order = if keys.is_empty() {
        (1..=exprs.len())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        keys.iter()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    (exprs.join(", "), keys.len(), order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_taken_out_of_create_table() {
        assert_eq!(
            without_counter("CREATE TABLE `t` (\n  `id` int AUTO_INCREMENT\n) ENGINE=InnoDB AUTO_INCREMENT=1000 DEFAULT CHARSET=utf8mb4"),
            "CREATE TABLE `t` (\n  `id` int AUTO_INCREMENT\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        );
        assert_eq!(
            without_counter("CREATE TABLE x (a int)"),
            "CREATE TABLE x (a int)"
        );
    }

    #[test]
    fn a_column_character_set_named_by_its_collation_is_dropped() {
        assert_eq!(
            collation_only(
                "  `v` varchar(10) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci DEFAULT NULL,\n  \
                 `w` varchar(10) CHARACTER SET latin1 DEFAULT NULL\n) DEFAULT CHARSET=utf8mb4"
            ),
            "  `v` varchar(10) COLLATE utf8mb4_unicode_520_ci DEFAULT NULL,\n  \
             `w` varchar(10) CHARACTER SET latin1 DEFAULT NULL\n) DEFAULT CHARSET=utf8mb4"
        );
    }

    #[test]
    fn batch_escapes_are_undone() {
        assert_eq!(
            batch_rows("a\\tb\tc\\\\d\\n\n\nx", 2),
            vec![
                vec!["a\tb".to_string(), "c\\d\n".into()],
                vec!["x".into(), "".into()]
            ]
        );
    }

    fn fp(class: Class, object: &str, value: &str) -> Fingerprint {
        let mut f = Fingerprint::default();
        f.text(Class::Database, "defaults", "utf8mb4");
        f.text(class, object, value);
        f
    }

    #[test]
    fn diff_names_the_class_and_object() {
        let a = fp(Class::Counters, "auto_increment t", "1000");
        assert!(diff(&a, &a).is_empty());
        let b = fp(Class::Counters, "auto_increment t", "1001");
        let d = diff(&a, &b);
        assert_eq!(classes(&d), [Class::Counters]);
        assert_eq!(d[0].object, "auto_increment t");
        let c = fp(Class::Counters, "auto_increment u", "1000");
        let d = diff(&a, &c);
        assert_eq!(d.len(), 2, "{}", report(&d));
        assert!(d[0].detail.starts_with("missing"));
        assert!(d[1].detail.starts_with("unexpected"));
    }

    #[test]
    fn rows_name_the_first_differing_key() {
        let a = TableRows::from_output("1\t1\tx\n2\t2\ty\n3\t3\tz", 1);
        let b = TableRows::from_output("1\t1\tx\n2\t2\tY\n3\t3\tz", 1);
        assert_eq!(a.count, 3);
        assert_ne!(a.sha256, b.sha256);
        let text = a.first_difference(&b);
        let d = TableRows::from_output("1\t1\tX\n2\t2\tY\n3\t3\tz", 1);
        assert!(a
            .first_difference(&d)
            .ends_with("2 rows differ, keys (1) (2)"));
        assert!(
            text.contains("row 2: the row with key (2) differs"),
            "{text}"
        );
        let c = TableRows::from_output("1\t1\tx\n2\t2\ty", 1);
        assert!(a.first_difference(&c).contains("row 3: key (3) vs no row"));
    }

    #[test]
    fn own_database_qualifiers_are_dropped_in_definitions_only() {
        let mut f = Fingerprint::default();
        f.text(
            Class::Definitions,
            "view v",
            "select `app_copy`.`t`.`id` from `t` join `app_db`.`u`",
        );
        f.text(Class::Database, "defaults", "`app_copy`.");
        let r = f.unqualified("app_copy");
        assert_eq!(
            r.text_of(Class::Definitions, "view v"),
            Some("select `t`.`id` from `t` join `app_db`.`u`")
        );
        assert_eq!(r.text_of(Class::Database, "defaults"), Some("`app_copy`."));
    }

    #[test]
    fn every_part_has_a_script_per_flavor() {
        let maria = scripts(Flavor::Mariadb, &Part::ALL);
        let mysql = scripts(Flavor::Mysql, &Part::ALL);
        assert_eq!(maria.len(), Part::ALL.len());
        assert_eq!(mysql.len(), Part::ALL.len() - 2, "no sequences or history");
        let bytes = &maria.iter().find(|(p, _)| *p == Part::Bytes).unwrap().1;
        assert!(bytes.contains("X'000102"), "{bytes}");
        assert!(bytes.contains("FDFEFF'"));
    }
}
