//! A sample PostgreSQL database with many types and object kinds, and a query that fingerprints
//! it (schema objects, sequence values, per-table checksums) so a restore can be compared.

/// Creates the sample objects and rows in the current database.
pub const SEED: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SEQUENCE invoice_seq START 1000;
CREATE TABLE customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE,
    mood mood,
    created_at timestamptz NOT NULL DEFAULT '2025-01-02 03:04:05.678901+00',
    born date,
    profile jsonb,
    tags text[]
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers(id),
    total numeric(12, 2) CHECK (total >= 0),
    placed_at timestamp,
    note text,
    payload bytea,
    invoice int DEFAULT nextval('invoice_seq'),
    meta json
);
CREATE INDEX orders_customer_idx ON orders (customer_id, placed_at);
CREATE VIEW big_spenders AS
    SELECT c.name, sum(o.total) AS total FROM customers c JOIN orders o ON o.customer_id = c.id
    GROUP BY c.name;
CREATE FUNCTION order_count(cid int) RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT count(*) FROM orders WHERE customer_id = cid $$;
COMMENT ON TABLE orders IS 'orders, with a comment';
INSERT INTO customers (name, email, mood, born, profile, tags)
SELECT 'Customer ' || g || ' 😀 日本語 \ '' "', 'c' || g || '@example.com',
       (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, date '1970-01-01' + g,
       jsonb_build_object('n', g, 'nested', jsonb_build_object('k', g * 2, 'emoji', '🦀')),
       ARRAY['t' || g % 5, 'x']
FROM generate_series(1, 2000) g;
INSERT INTO orders (customer_id, total, placed_at, note, payload, meta)
SELECT 1 + g % 2000, (g * 1.37)::numeric(12, 2), timestamp '2024-01-01' + g * interval '37 minutes',
       CASE WHEN g % 7 = 0 THEN NULL ELSE 'note ' || g END,
       decode(md5(g::text) || '00ff', 'hex'), json_build_object('g', g)
FROM generate_series(1, 20000) g;
SELECT setval('invoice_seq', 54321);
"#;

/// Schema objects, sequence values and per-table checksums, as one comparable text. The same
/// across server versions: NOT NULL, which PostgreSQL 18 also lists as constraints, is compared
/// through the columns' nullability.
pub const FINGERPRINT: &str = r#"
SELECT string_agg(x, E'\n' ORDER BY x) FROM (
  SELECT 'rel ' || c.relname || ' ' || c.relkind::text FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'
  UNION ALL SELECT 'col ' || table_name || '.' || column_name || ' ' || data_type || ' '
    || coalesce(column_default, '') || ' ' || is_nullable
    FROM information_schema.columns WHERE table_schema = 'public'
  UNION ALL SELECT 'idx ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
  UNION ALL SELECT 'view ' || viewname || ' ' || definition FROM pg_views WHERE schemaname = 'public'
  UNION ALL SELECT 'fn ' || p.proname || ' ' || p.prosrc FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
  UNION ALL SELECT 'seq ' || sequencename || ' ' || coalesce(last_value::text, 'null')
    FROM pg_sequences WHERE schemaname = 'public'
  UNION ALL SELECT 'con ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
    WHERE connamespace = 'public'::regnamespace AND contype <> 'n'
  UNION ALL SELECT 'enum ' || t.typname || ' ' || string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
    FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname
  UNION ALL SELECT 'comment ' || coalesce(obj_description('orders'::regclass, 'pg_class'), '')
  UNION ALL SELECT 'customers ' || count(*) || ' ' || md5(string_agg(c::text, '|' ORDER BY id)) FROM customers c
  UNION ALL SELECT 'orders ' || count(*) || ' ' || md5(string_agg(o::text, '|' ORDER BY id)) FROM orders o
  UNION ALL SELECT 'view rows ' || count(*) || ' ' || md5(string_agg(b::text, '|' ORDER BY name)) FROM big_spenders b
  UNION ALL SELECT 'fn result ' || order_count(7)
) s(x);
"#;
