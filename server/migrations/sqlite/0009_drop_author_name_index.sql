-- Nothing looks comments up by author name any more ("first comment" pre-moderation goes by
-- email alone), and keeping this index cost every insert a write at a random place in it: a
-- fifth of the import benchmark's time.
DROP INDEX comments_author_name;
