import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: ["./src/store/pg/schema.ts", "./src/store/pg/ha-schema.ts"],
  out: "./migrations/pg",
});
