-- AlterEnum
ALTER TYPE "TicketStatus" ADD VALUE 'hold';
