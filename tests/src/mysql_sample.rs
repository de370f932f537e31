//! A sample MySQL/MariaDB database: InnoDB tables with utf8mb4 text (4-byte emoji and rare CJK),
//! JSON, DECIMAL, DATETIME(6), BLOB, generated columns, a foreign key, AUTO_INCREMENT counters,
//! a view, a procedure, a function, a trigger and an event; and a fingerprint to compare.

/// Creates the sample objects and rows in the current database (one statement per `-e` run is
/// not needed: no statement has an inner `;`).
pub const SEED: &str = r#"
CREATE TABLE customers (
    id INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(200) CHARACTER SET utf8mb4 NOT NULL,
    email VARCHAR(200) UNIQUE,
    profile JSON,
    balance DECIMAL(14, 4) NOT NULL DEFAULT 0,
    created_at DATETIME(6) NOT NULL,
    avatar BLOB,
    name_upper VARCHAR(200) AS (UPPER(name)) STORED,
    name_length INT AS (CHAR_LENGTH(name)) VIRTUAL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
CREATE TABLE orders (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    customer_id INT NOT NULL,
    total DECIMAL(12, 2) NOT NULL,
    note TEXT,
    placed_at DATETIME(6),
    CONSTRAINT orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(100)) ENGINE = InnoDB;
INSERT INTO customers (name, email, profile, balance, created_at, avatar)
WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 900)
SELECT CONCAT('Customer ', n, ' 😀🦀 𠜎 日本語 \' "'), CONCAT('c', n, '@example.com'),
       JSON_OBJECT('n', n, 'tags', JSON_ARRAY('a', '🦀')), n * 1.2345,
       TIMESTAMP('2025-01-01 00:00:00.123456') + INTERVAL n SECOND,
       UNHEX(CONCAT(SHA2(n, 256), '00FF00'))
FROM seq;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW
    INSERT INTO audit (msg) VALUES (CONCAT('order ', NEW.id));
INSERT INTO orders (customer_id, total, note, placed_at)
SELECT c.id, c.id * k.k * 0.5, IF(c.id % 7 = 0, NULL, CONCAT('note ', c.id)), c.created_at
FROM customers c JOIN (SELECT 1 AS k UNION ALL SELECT 2 UNION ALL SELECT 3) k;
DELETE FROM orders WHERE id > 2690;
ALTER TABLE customers AUTO_INCREMENT = 5000;
CREATE VIEW big_spenders AS
    SELECT c.name, SUM(o.total) AS total FROM customers c JOIN orders o ON o.customer_id = c.id
    GROUP BY c.name;
CREATE PROCEDURE add_order (IN cid INT, IN amount DECIMAL(12, 2))
    INSERT INTO orders (customer_id, total, placed_at) VALUES (cid, amount, NOW(6));
CREATE FUNCTION order_count (cid INT) RETURNS INT READS SQL DATA
    RETURN (SELECT COUNT(*) FROM orders WHERE customer_id = cid);
CREATE EVENT nightly_cleanup ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00'
    DO DELETE FROM audit WHERE id < 0;
"#;

/// Definitions, AUTO_INCREMENT counters (in SHOW CREATE TABLE), checksums and row counts.
pub const FINGERPRINT: &str = r#"
SELECT table_name, table_type, engine, table_collation FROM information_schema.tables
    WHERE table_schema = DATABASE() ORDER BY table_name;
SHOW CREATE TABLE customers;
SHOW CREATE TABLE orders;
SHOW CREATE TABLE audit;
SHOW CREATE VIEW big_spenders;
SHOW CREATE PROCEDURE add_order;
SHOW CREATE FUNCTION order_count;
SELECT trigger_name, action_timing, event_manipulation, action_statement
    FROM information_schema.triggers WHERE trigger_schema = DATABASE();
SHOW CREATE EVENT nightly_cleanup;
CHECKSUM TABLE customers, orders, audit;
SELECT COUNT(*), SUM(balance), MAX(created_at), HEX(MAX(name)) FROM customers;
SELECT COUNT(*), SUM(total) FROM orders;
SELECT COUNT(*) FROM audit;
SELECT order_count(7), HEX(name), HEX(avatar), profile FROM customers WHERE id = 7;
"#;
