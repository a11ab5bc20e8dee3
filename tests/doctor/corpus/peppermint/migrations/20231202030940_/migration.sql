-- AlterTable
ALTER TABLE "Config" ADD COLUMN     "first_time_setup" BOOLEAN NOT NULL DEFAULT true;
