-- What the application does after a repair: new rows that take their ids from the
-- sequences (the actor insert fails with a duplicate key while actor_actor_id_seq is behind).
INSERT INTO public.actor (first_name, last_name) VALUES ('JENNIFER', 'DAVIS');
INSERT INTO public.category (name) VALUES ('Children');
INSERT INTO public.film_actor (actor_id, film_id) VALUES (3, 1);
