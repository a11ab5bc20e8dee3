-- AlterTable
ALTER TABLE "Config" ADD COLUMN     "encryption_key" TEXT;
