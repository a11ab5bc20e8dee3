-- AlterTable
ALTER TABLE "User" ADD COLUMN     "external_user" BOOLEAN NOT NULL DEFAULT false;
