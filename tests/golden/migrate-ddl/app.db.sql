CREATE TABLE users (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  email TEXT NOT NULL UNIQUE COLLATE NOCASE,
  active BOOLEAN NOT NULL DEFAULT 1,
  created DATETIME DEFAULT CURRENT_TIMESTAMP,
  meta JSON
);
CREATE TABLE orders (
  id INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  total NUMERIC(10,2) CHECK (total >= 0),
  big DECIMAL_TEXT(30,10),
  placed DATE,
  photo BLOB,
  note TEXT
);
CREATE INDEX orders_user ON orders (user_id);
CREATE INDEX orders_open ON orders (placed) WHERE note IS NULL;
CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100;
CREATE TRIGGER orders_touch AFTER UPDATE ON orders BEGIN SELECT 1; END;
INSERT INTO users (email, active, created, meta) VALUES
  ('a@example.com', 1, '2024-01-02 03:04:05', '{"tier": "gold"}'),
  ('b@example.com', 0, '2024-02-29 23:59:59', '[1, 2]');
INSERT INTO orders (user_id, total, big, placed, photo, note) VALUES
  (1, 12.50, '12345678901234567890.1234567890', '2024-03-01', X'00FF', NULL),
  (1, 250, '0.5', '2024-03-02', NULL, 'gift'),
  (2, 0.99, NULL, '2024-03-03', X'', NULL);
