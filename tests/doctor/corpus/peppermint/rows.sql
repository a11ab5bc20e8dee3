-- A few rows as Peppermint writes them (Prisma: text uuids as ids).
INSERT INTO "User" (id, name, password, email, "isAdmin") VALUES
  ('5c1a7b7e-3b8a-4a8f-9d57-0e4f6f1a2b01', 'admin', '$2b$10$abc', 'admin@admin.com', true),
  ('5c1a7b7e-3b8a-4a8f-9d57-0e4f6f1a2b02', 'agent', NULL, 'agent@example.com', false);
INSERT INTO "EmailQueue" (id, name, username, password, hostname, "serviceType") VALUES
  ('9d0f6c1e-1111-4c3b-8a57-2a4f6f1a2b01', 'support', 'support@example.com', 'secret', 'imap.example.com', 'other');
INSERT INTO "EmailQueue" (id, name, username, hostname, "serviceType", "clientId", "clientSecret", "accessToken", "refreshToken", "expiresIn", "redirectUri", "tenantId") VALUES
  ('9d0f6c1e-1111-4c3b-8a57-2a4f6f1a2b02', 'gmail', 'help@example.com', 'imap.gmail.com', 'gmail', 'client-1', 'shh', 'ya29.a0AfH6SM', '1//0gLx', 3599, 'https://desk.example.com/api/v1/auth/callback', NULL);
INSERT INTO "OAuthProvider" (name, "clientId", "clientSecret", "authorizationUrl", "tokenUrl", "userInfoUrl", "redirectUri", scope) VALUES
  ('github', 'gh-client', 'gh-secret', 'https://github.com/login/oauth/authorize', 'https://github.com/login/oauth/access_token', 'https://api.github.com/user', 'https://desk.example.com/auth/callback', 'read:user');
INSERT INTO "Session" (id, "sessionToken", "userId", expires) VALUES
  ('0d3f1e2a-aaaa-4c3b-8a57-2a4f6f1a2b01', 'f4c8e1d2b3a4958672e1d0c9b8a7f6e5d4c3b2a1', '5c1a7b7e-3b8a-4a8f-9d57-0e4f6f1a2b01', '2030-01-01');
INSERT INTO "Client" (id, name, email, "contactName") VALUES
  ('c0000000-0000-4000-8000-000000000001', 'Acme', 'ops@acme.test', 'Wile');
INSERT INTO "Ticket" (id, title, "isComplete", priority, "fromImap", status, "clientId") VALUES
  ('71000000-0000-4000-8000-000000000001', 'Printer on fire', false, 'high', false, 'needs_support', 'c0000000-0000-4000-8000-000000000001'),
  ('71000000-0000-4000-8000-000000000002', 'VPN', true, 'low', false, 'done', NULL);
