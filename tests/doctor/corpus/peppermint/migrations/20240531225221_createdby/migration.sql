-- AlterTable
ALTER TABLE "Ticket" ADD COLUMN     "createdBy" JSONB;
