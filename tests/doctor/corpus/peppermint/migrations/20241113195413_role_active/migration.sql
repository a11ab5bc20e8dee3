-- AlterTable
ALTER TABLE "Config" ADD COLUMN     "roles_active" BOOLEAN NOT NULL DEFAULT false;
