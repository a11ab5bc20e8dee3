-- AlterTable
ALTER TABLE "Ticket" ADD COLUMN     "locked" BOOLEAN NOT NULL DEFAULT false;
