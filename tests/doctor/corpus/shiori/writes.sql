-- What shiori does after a repair: a bookmark, a tag on it, a second account.
INSERT INTO bookmark (url, title, created_at) VALUES ('https://example.com/c', 'C', '2024-01-03 10:00:00');
INSERT INTO tag (name) VALUES ('web');
INSERT INTO bookmark_tag (bookmark_id, tag_id) VALUES (3, 3);
INSERT INTO account (username, password) VALUES ('third', '$2a$10$Def');
