-- What Peppermint does after a repair: a second mailbox with no OAuth tokens yet, a second
-- OAuth provider sharing the first one's token URL, a new session and ticket.
INSERT INTO "EmailQueue" (id, name, username, hostname, "serviceType") VALUES ('9d0f6c1e-1111-4c3b-8a57-2a4f6f1a2b03', 'sales', 'sales@example.com', 'imap.example.com', 'other');
INSERT INTO "OAuthProvider" (name, "clientId", "clientSecret", "authorizationUrl", "tokenUrl", "userInfoUrl", "redirectUri", scope) VALUES ('github-enterprise', 'ghe', 'ghe-secret', 'https://github.com/login/oauth/authorize', 'https://github.com/login/oauth/access_token', 'https://api.github.com/user', 'https://desk.example.com/auth/callback', 'read:user');
INSERT INTO "Session" (id, "sessionToken", "userId", expires) VALUES ('0d3f1e2a-aaaa-4c3b-8a57-2a4f6f1a2b02', 'a1b2c3d4e5f60718293a4b5c6d7e8f9012345678', '5c1a7b7e-3b8a-4a8f-9d57-0e4f6f1a2b02', '2030-01-01');
INSERT INTO "Ticket" (id, title, "isComplete", priority, "fromImap") VALUES ('71000000-0000-4000-8000-000000000003', 'Printer on fire again', false, 'high', false);
