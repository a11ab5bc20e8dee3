-- What a Django site does after a repair: a user without an e-mail, a session, a group.
INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined) VALUES ('md5$x$y', false, 'bob', '', '', '', false, true, '2024-01-01 00:00:00');
INSERT INTO django_session (session_key, session_data, expire_date) VALUES ('k2t3p9l0v7b6n5m4c3x2z1a8s7d6f5g4', 'e30:1', '2030-01-01 00:00:00');
INSERT INTO auth_group (name) VALUES ('authors');
