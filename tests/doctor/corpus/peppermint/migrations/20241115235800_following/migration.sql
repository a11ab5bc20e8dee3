-- AlterTable
ALTER TABLE "Ticket" ADD COLUMN     "following" JSONB;
