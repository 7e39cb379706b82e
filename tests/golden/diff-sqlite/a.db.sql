CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC(8,2), tags JSON);
INSERT INTO items VALUES (1, 'pen', 1.50, '["blue"]'), (2, 'ink', 12, '{"ml": 30}'), (3, 'pad', 3.2, NULL);
CREATE TABLE same (k TEXT PRIMARY KEY);
INSERT INTO same VALUES ('x'), ('y');
