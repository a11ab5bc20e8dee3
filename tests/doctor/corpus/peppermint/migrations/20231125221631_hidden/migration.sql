-- AlterTable
ALTER TABLE "Ticket" ADD COLUMN     "hidden" BOOLEAN NOT NULL DEFAULT false;
