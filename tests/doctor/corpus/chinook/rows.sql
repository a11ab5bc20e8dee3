-- A few rows in Chinook's own shape (ids as in Chinook_Sqlite.sql).
INSERT INTO [Genre] ([GenreId], [Name]) VALUES (1, 'Rock'), (2, 'Jazz');
INSERT INTO [MediaType] ([MediaTypeId], [Name]) VALUES (1, 'MPEG audio file');
INSERT INTO [Artist] ([ArtistId], [Name]) VALUES (1, 'AC/DC'), (2, 'Accept');
INSERT INTO [Album] ([AlbumId], [Title], [ArtistId]) VALUES
  (1, 'For Those About To Rock We Salute You', 1), (2, 'Balls to the Wall', 2);
INSERT INTO [Track] ([TrackId], [Name], [AlbumId], [MediaTypeId], [GenreId], [Composer],
  [Milliseconds], [Bytes], [UnitPrice]) VALUES
  (1, 'For Those About To Rock (We Salute You)', 1, 1, 1, 'Angus Young', 343719, 11170334, 0.99),
  (2, 'Balls to the Wall', 2, 1, 1, NULL, 342562, 5510424, 0.99),
  (6, 'Put The Finger On You', 1, 1, 1, 'Angus Young', 205662, 6713451, 0.99);
INSERT INTO [Employee] ([EmployeeId], [LastName], [FirstName], [Title], [Email]) VALUES
  (1, 'Adams', 'Andrew', 'General Manager', 'andrew@chinookcorp.com');
INSERT INTO [Customer] ([CustomerId], [FirstName], [LastName], [Country], [Email], [SupportRepId])
  VALUES (1, 'Luís', 'Gonçalves', 'Brazil', 'luisg@embraer.com.br', 1),
         (2, 'Leonie', 'Köhler', 'Germany', 'leonekohler@surfeu.de', 1);
INSERT INTO [Invoice] ([InvoiceId], [CustomerId], [InvoiceDate], [Total]) VALUES
  (1, 2, '2021-01-01 00:00:00', 1.98);
INSERT INTO [InvoiceLine] ([InvoiceLineId], [InvoiceId], [TrackId], [UnitPrice], [Quantity])
  VALUES (1, 1, 2, 0.99, 1), (2, 1, 6, 0.99, 1);
INSERT INTO [Playlist] ([PlaylistId], [Name]) VALUES (1, 'Music');
INSERT INTO [PlaylistTrack] ([PlaylistId], [TrackId]) VALUES (1, 1), (1, 2);
