-- What the application does after a repair: a new customer, an invoice, a playlist entry.
INSERT INTO [Customer] ([FirstName], [LastName], [Email], [SupportRepId]) VALUES ('François', 'Tremblay', 'ftremblay@gmail.com', 1);
INSERT INTO [Invoice] ([CustomerId], [InvoiceDate], [Total]) VALUES (1, '2021-01-02 00:00:00', 0.99);
INSERT INTO [PlaylistTrack] ([PlaylistId], [TrackId]) VALUES (1, 6);
