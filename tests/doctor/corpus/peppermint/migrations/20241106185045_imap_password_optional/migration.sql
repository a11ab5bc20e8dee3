-- AlterTable
ALTER TABLE "EmailQueue" ALTER COLUMN "password" DROP NOT NULL;
