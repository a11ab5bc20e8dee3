-- A few rows with pagila's own ids. The pg_dump data file ends each table with
-- SELECT pg_catalog.setval(...); kept here for every table but actor, whose ids were
-- restored without it (the common restore mistake the doctor must see).
SET search_path = public;
INSERT INTO language (language_id, name) VALUES (1, 'English'), (2, 'Italian');
SELECT pg_catalog.setval('public.language_language_id_seq', 6, true);
INSERT INTO country (country_id, country) VALUES (1, 'Afghanistan'), (2, 'Algeria');
SELECT pg_catalog.setval('public.country_country_id_seq', 109, true);
INSERT INTO city (city_id, city, country_id) VALUES (1, 'A Corua (La Corua)', 2), (2, 'Abha', 1);
SELECT pg_catalog.setval('public.city_city_id_seq', 600, true);
INSERT INTO category (category_id, name) VALUES (1, 'Action'), (2, 'Animation');
SELECT pg_catalog.setval('public.category_category_id_seq', 16, true);
INSERT INTO actor (actor_id, first_name, last_name) VALUES
  (1, 'PENELOPE', 'GUINESS'), (2, 'NICK', 'WAHLBERG'), (3, 'ED', 'CHASE');
INSERT INTO film (film_id, title, description, release_year, language_id, rental_duration,
  rental_rate, length, replacement_cost, rating, special_features, fulltext) VALUES
  (1, 'ACADEMY DINOSAUR', 'A Epic Drama of a Feminist', 2012, 1, 6, 0.99, 86, 20.99, 'PG',
   '{"Deleted Scenes","Behind the Scenes"}', to_tsvector('academy dinosaur'));
SELECT pg_catalog.setval('public.film_film_id_seq', 1000, true);
INSERT INTO film_actor (actor_id, film_id) VALUES (1, 1), (2, 1);
INSERT INTO film_category (film_id, category_id) VALUES (1, 1);
