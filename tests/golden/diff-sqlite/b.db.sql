CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC(8,2), tags JSON);
INSERT INTO items VALUES (2, 'ink', 12.00, '{ "ml" : 30 }'), (1, 'pen', 1.5, '["blue"]'), (4, 'cap', 0.75, '[]');
CREATE TABLE same (k TEXT PRIMARY KEY);
INSERT INTO same VALUES ('y'), ('x');
