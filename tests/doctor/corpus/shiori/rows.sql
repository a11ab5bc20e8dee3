-- A few rows as shiori writes them (bcrypt hashes shortened: they are never read here).
INSERT INTO account (username, password, owner, config) VALUES
  ('shiori', '$2a$10$XyZ', 1, '{"ShowId":false}'), ('reader', '$2a$10$AbC', 0, '{}');
INSERT INTO bookmark (url, title, excerpt, author, public, has_content, created_at, modified_at)
  VALUES ('https://example.com/a', 'A', '', '', 0, 0, '2024-01-01 10:00:00', '2024-01-01 10:00:00'),
         ('https://example.com/b', 'B', 'b', 'someone', 1, 0, '2024-01-02 10:00:00', NULL);
INSERT INTO tag (name) VALUES ('go'), ('sqlite');
INSERT INTO bookmark_tag (bookmark_id, tag_id) VALUES (1, 1), (1, 2), (2, 2);
