-- AlterTable
ALTER TABLE "Email" ADD COLUMN     "accessToken" TEXT,
ADD COLUMN     "expiresIn" INTEGER;
