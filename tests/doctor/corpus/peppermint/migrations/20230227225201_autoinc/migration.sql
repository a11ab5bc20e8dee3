-- AlterTable
ALTER TABLE "Ticket" ADD COLUMN     "Number" SERIAL NOT NULL;
