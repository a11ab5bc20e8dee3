-- migrations/20240502_chatbots_uuid_token.sql (seed 001)
BEGIN;
ALTER TABLE chatbots
  ALTER COLUMN public_token DROP DEFAULT,
  ALTER COLUMN public_token TYPE uuid USING public_token::uuid,
  ALTER COLUMN public_token SET DEFAULT uuid_generate_v4();
CREATE UNIQUE INDEX CONCURRENTLY chatbots_public_token_key ON chatbots (public_token);
COMMIT;
CREATE INDEX conversations_psid_status_idx ON conversations (psid, status);
