import java.sql.*;

/** Drives pgJDBC against the proxy; prints one line per check for the pytest to read. */
public class ClientCheck {
    public static void main(String[] args) throws Exception {
        String url = args[0], user = args[1], password = args[2], query = args[3], refused = args[4], prepared = args[5];
        try (Connection conn = DriverManager.getConnection(url, user, password)) {
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(query)) {
                ResultSetMetaData md = rs.getMetaData();
                StringBuilder sb = new StringBuilder("COLUMNS");
                for (int i = 1; i <= md.getColumnCount(); i++) sb.append(' ').append(md.getColumnName(i)).append(':').append(md.getColumnTypeName(i));
                System.out.println(sb);
                int n = 0; while (rs.next()) n++;
                System.out.println("ROWS " + n);
            }
            try (Statement st = conn.createStatement()) {
                st.executeQuery(refused);
                System.out.println("REFUSED none");
            } catch (SQLException e) {
                System.out.println("REFUSED " + e.getSQLState());
            }
            try (PreparedStatement ps = conn.prepareStatement(prepared)) {
                for (int i = 0; i < 7; i++) {
                    ps.setInt(1, 30 + i);
                    try (ResultSet rs = ps.executeQuery()) { rs.next(); System.out.println("PREPARED " + i + " " + rs.getObject(1)); }
                }
            }
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 1")) {
                rs.next(); System.out.println("AFTER " + rs.getInt(1));
            }
            DatabaseMetaData meta = conn.getMetaData();
            try (ResultSet rs = meta.getTables(null, null, "%", new String[]{"TABLE"})) {
                while (rs.next()) System.out.println("TABLE " + rs.getString("TABLE_NAME"));
            }
            try (ResultSet rs = meta.getColumns(null, null, "people", "%")) {
                while (rs.next()) System.out.println("COLUMN " + rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME"));
            }
            System.out.println("VERSION " + meta.getDatabaseProductVersion());
        }
    }
}
