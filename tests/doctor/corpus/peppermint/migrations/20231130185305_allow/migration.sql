-- AlterTable
ALTER TABLE "Config" ALTER COLUMN "notifications" DROP NOT NULL;
