-- A staff account's address: with `[moderation] mail_staff`, held comments are mailed to it
-- with signed approve / reject / spam links that act as that account.
ALTER TABLE users ADD COLUMN email TEXT;
